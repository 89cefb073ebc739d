// The centre square of an RGBA frame -> the 32x32 RGB pixels the model sees, bit for bit what the
// project's Python path gives (cifar_model.preprocess.center_square_resize, Pillow 12.3):
//
//     side = min(w, h); left, top = (w - side) // 2, (h - side) // 2
//     img.resize((32, 32), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side),
//                reducing_gap=3.0)
//
// Ported from Pillow's Image.resize / _get_safe_box (Image.py), ImagingReduce (Reduce.c) and
// ImagingResample (Resample.c): the same integer box reduce first when the square is at least
// 6x the output, then the separable bicubic (a = -0.5) resample with its support widened by the
// downscale factor, coefficients rounded to 22-bit fixed point, horizontal pass first with its
// result rounded to 8 bits, then the vertical pass. Pillow passes the box to C as float32: the
// Math.fround calls below reproduce that.
//
// Pass the WHOLE frame, not a pre-cropped square: like Pillow, the filter reads pixels up to two
// (scaled) pixels outside the square where the frame has them. Alpha is ignored (camera frames
// are opaque; Pillow's to_rgb composites transparency onto white before this step).

const PRECISION_BITS = 22; // Resample.c: 32 - 8 bits - 2 bits of headroom
const HALF = 1 << (PRECISION_BITS - 1);
const BICUBIC_SUPPORT = 2.0;
const REDUCING_GAP = 3.0;

/**
 * @param {Uint8Array|Uint8ClampedArray} rgba  width * height * 4 bytes (ImageData.data)
 * @param {number} width
 * @param {number} height
 * @param {number} [size=32]  side of the output square
 * @returns {Uint8Array} size * size * 3 bytes, RGB, row-major (the model's NHWC input for N = 1)
 */
export function squareTo32(rgba, width, height, size = 32) {
  if (!(width > 0 && height > 0) || rgba.length < width * height * 4) {
    throw new Error(`squareTo32: ${width}x${height} frame needs ${width * height * 4} bytes, got ${rgba.length}`);
  }
  let img = { data: rgba, w: width, h: height, ch: 4 };
  const side = Math.min(width, height);
  const left = (width - side) >> 1;
  const top = (height - side) >> 1;
  let box = [left, top, left + side, top + side];
  if (width === size && height === size) return crop(img, 0, 0, size, size).data; // Image.resize's copy()

  // Image.resize with reducing_gap: box-reduce by an integer factor first.
  const fx = Math.trunc(side / size / REDUCING_GAP) || 1;
  const fy = fx; // square box, square output
  if (fx > 1) {
    const support = (BICUBIC_SUPPORT - 0.5) * (side / size); // _get_safe_box
    const rb = [
      Math.max(0, Math.trunc(box[0] - support)),
      Math.max(0, Math.trunc(box[1] - support)),
      Math.min(width, Math.ceil(box[2] + support)),
      Math.min(height, Math.ceil(box[3] + support)),
    ];
    img = reduce(img, rb, fx, fy);
    box = [(box[0] - rb[0]) / fx, (box[1] - rb[1]) / fy, (box[2] - rb[0]) / fx, (box[3] - rb[1]) / fy];
  }
  box = box.map(Math.fround); // PyArg_ParseTuple "ffff"

  if (img.h > img.w * 100 && size < img.h) { // Image.resize's two-step path for very tall images
    const tall = resize(img, img.w, size, [0, box[1], img.w, box[3]]);
    return resize(tall, size, size, [box[0], 0, box[2], size]).data;
  }
  return resize(img, size, size, box).data;
}

function crop(img, x0, y0, w, h) {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const s = ((y0 + y) * img.w + x0 + x) * img.ch;
      const d = (y * w + x) * 3;
      out[d] = img.data[s];
      out[d + 1] = img.data[s + 1];
      out[d + 2] = img.data[s + 2];
    }
  }
  return { data: out, w, h, ch: 3 };
}

// Reduce.c (ImagingReduce + ImagingReduceCorners): the mean of each factor x factor block of the
// integer box rb = [x0, y0, x1, y1]; the last row and column average their partial blocks. Every
// variant there rounds the same way: ((sum + n / 2) * multiplier) >> 24, multiplier from float32.
function reduce(img, rb, fx, fy) {
  const [x0, y0, x1, y1] = rb;
  const bw = x1 - x0, bh = y1 - y0;
  const ow = Math.ceil(bw / fx), oh = Math.ceil(bh / fy);
  const { data, w, ch } = img;
  const out = new Uint8Array(ow * oh * 3);
  const sums = new Float64Array(ow * 3);
  for (let oy = 0; oy < oh; oy++) {
    sums.fill(0);
    const ya = y0 + oy * fy, yb = Math.min(ya + fy, y1);
    for (let y = ya; y < yb; y++) {
      let s = (y * w + x0) * ch;
      for (let x = 0; x < bw; x++, s += ch) {
        const o = ((x / fx) | 0) * 3;
        sums[o] += data[s];
        sums[o + 1] += data[s + 1];
        sums[o + 2] += data[s + 2];
      }
    }
    for (let ox = 0; ox < ow; ox++) {
      const n = (Math.min((ox + 1) * fx, bw) - ox * fx) * (yb - ya);
      const mult = Math.trunc(Math.fround(4294967296 / Math.fround(n * 256))); // division_UINT32
      const amend = Math.floor(n / 2);
      for (let c = 0; c < 3; c++) {
        const i = ox * 3 + c;
        out[oy * ow * 3 + i] = Math.floor((((sums[i] + amend) * mult) % 4294967296) / 16777216); // UINT32 >> 24
      }
    }
  }
  return { data: out, w: ow, h: oh, ch: 3 };
}

function bicubic(x) { // Resample.c bicubic_filter, a = -0.5, same operation order
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((-0.5 + 2.0) * x - (-0.5 + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * -0.5;
  return 0.0;
}

// Resample.c precompute_coeffs + normalize_coeffs_8bpc. in0/in1 are float32 values.
function coeffs(inSize, in0, in1, outSize) {
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = BICUBIC_SUPPORT * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  const invFilterscale = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0.0;
    for (let x = 0; x < xmax; x++) {
      w[x] = bicubic((x + xmin - center + 0.5) * invFilterscale);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// _imaging.c _resize + Resample.c ImagingResampleInner for an 8-bit RGB(A) image; box is float32.
function resize(img, xsize, ysize, box) {
  if (box[0] === Math.trunc(box[0]) && box[2] - box[0] === xsize &&
      box[1] === Math.trunc(box[1]) && box[3] - box[1] === ysize) {
    return crop(img, box[0], box[1], xsize, ysize);
  }
  const needH = xsize !== img.w || box[0] !== 0 || box[2] !== xsize;
  const needV = ysize !== img.h || box[1] !== 0 || box[3] !== ysize;
  const vert = coeffs(img.h, box[1], box[3], ysize);
  const yFirst = vert.bounds[0];
  const yLast = vert.bounds[ysize * 2 - 2] + vert.bounds[ysize * 2 - 1];
  let src = img;

  if (needH) {
    const hor = coeffs(img.w, box[0], box[2], xsize);
    for (let i = 0; i < ysize; i++) vert.bounds[i * 2] -= yFirst;
    const rows = yLast - yFirst;
    const out = new Uint8Array(xsize * rows * 3);
    const { data, w, ch } = img;
    for (let y = 0; y < rows; y++) {
      const line = (y + yFirst) * w;
      for (let xx = 0; xx < xsize; xx++) {
        const xmin = hor.bounds[xx * 2], xmax = hor.bounds[xx * 2 + 1], k0 = xx * hor.ksize;
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let x = 0; x < xmax; x++) {
          const k = hor.kk[k0 + x], s = (line + x + xmin) * ch;
          s0 += data[s] * k;
          s1 += data[s + 1] * k;
          s2 += data[s + 2] * k;
        }
        const d = (y * xsize + xx) * 3;
        out[d] = clip8(s0);
        out[d + 1] = clip8(s1);
        out[d + 2] = clip8(s2);
      }
    }
    src = { data: out, w: xsize, h: rows, ch: 3 };
  }

  if (needV) {
    const { data, w, ch } = src;
    const out = new Uint8Array(w * ysize * 3);
    for (let yy = 0; yy < ysize; yy++) {
      const ymin = vert.bounds[yy * 2], ymax = vert.bounds[yy * 2 + 1], k0 = yy * vert.ksize;
      for (let xx = 0; xx < w; xx++) {
        let s0 = HALF, s1 = HALF, s2 = HALF;
        for (let y = 0; y < ymax; y++) {
          const k = vert.kk[k0 + y], s = ((y + ymin) * w + xx) * ch;
          s0 += data[s] * k;
          s1 += data[s + 1] * k;
          s2 += data[s + 2] * k;
        }
        const d = (yy * w + xx) * 3;
        out[d] = clip8(s0);
        out[d + 1] = clip8(s1);
        out[d + 2] = clip8(s2);
      }
    }
    return { data: out, w, h: ysize, ch: 3 };
  }
  return src.ch === 3 ? src : crop(src, 0, 0, src.w, src.h);
}
