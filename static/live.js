// The Live tab, computed in the visitor's browser: camera -> the frame's centre square reduced to
// 32x32 exactly as the library does (resize.js) -> the weights' model.onnx (the library's whole
// inference rule: flip averaging, calibration, the unsure margin) in onnxruntime-web (WASM, one
// thread) -> ten bars. No frame leaves the page. app.py renders the markup and its data-* settings;
// setup() is imported when the tab first opens. If the model can't run here, the page falls back to
// the server's own Live path (body.live-fallback).

import { squareTo32 } from "./resize.js";

const SMOOTH = 0.3; // weight of the newest frame in the running means shown
const HYSTERESIS = 0.5; // the unsure notice turns on above +this (smoothed margin) and off below -this

async function fetchBytes(url, integrity) {
  const response = await fetch(url, integrity ? { integrity } : {});
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

// onnxruntime-web's CPU build with its glue inside (ort.wasm.bundle.min.mjs). With integrity hashes
// (files from a CDN) the script is imported from checked bytes and the wasm handed over as bytes.
async function loadRuntime(base, integrity) {
  let ort;
  if (integrity) {
    const url = URL.createObjectURL(new Blob([await fetchBytes(base + "ort.wasm.bundle.min.mjs", integrity.ort)],
      { type: "text/javascript" }));
    try { ort = await import(url); } finally { URL.revokeObjectURL(url); }
    ort.env.wasm.wasmBinary = await fetchBytes(base + "ort-wasm-simd-threaded.wasm", integrity.wasm);
  } else {
    ort = await import(base + "ort.wasm.bundle.min.mjs");
    ort.env.wasm.wasmPaths = { wasm: base + "ort-wasm-simd-threaded.wasm" }; // an object: no extra glue file
  }
  ort.env.wasm.numThreads = 1; // threads would need a cross-origin-isolated page
  return ort;
}

export async function setup(root) {
  const cfg = root.dataset;
  const classes = JSON.parse(cfg.classes);
  const $ = (sel) => root.querySelector(sel);
  const status = $(".live-status"), button = $(".live-start"), video = $("video"), headline = $(".live-headline");
  const bars = [...root.querySelectorAll(".live-bars li")];
  const say = (text) => { status.textContent = text; };
  let session, ort;
  try {
    if (typeof WebAssembly !== "object") throw new Error("this browser has no WebAssembly");
    if (!cfg.model) throw new Error("these weights come without model.onnx");
    say("Loading the model (about 12 MB the first time)…");
    ort = await loadRuntime(new URL(cfg.ortBase, location.href).href, cfg.ortIntegrity && JSON.parse(cfg.ortIntegrity));
    const model = await fetchBytes(cfg.model, cfg.modelIntegrity);
    session = await ort.InferenceSession.create(new Uint8Array(model), { executionProviders: ["wasm"] });
  } catch (err) {
    document.body.classList.add("live-fallback");
    say(`The model can't run in this browser (${err.message}), so the Live view below sends camera frames ` +
        "to the server instead: they are classified and not kept.");
    return null;
  }

  async function classify(rgba, width, height) {
    const input = new ort.Tensor("uint8", squareTo32(rgba, width, height), [1, 32, 32, 3]);
    const out = await session.run({ pixels: input });
    return { probabilities: Array.from(out.probabilities.data), unsure: out.unsure.data[0] };
  }

  const stats = { frames: 0, toggles: 0, ms: [] };
  let running = false, stream = null, shown = null, margin = 0, unsure = false;
  const canvas = document.createElement("canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });

  function show(probabilities, newMargin) {
    shown = shown ? shown.map((p, i) => p + SMOOTH * (probabilities[i] - p)) : probabilities;
    margin += SMOOTH * (newMargin - margin);
    const flip = unsure ? margin < -HYSTERESIS : margin > HYSTERESIS;
    if (flip) { unsure = !unsure; stats.toggles += 1; }
    const top = classes[shown.indexOf(Math.max(...shown))];  // text, never markup: names come from the weights
    headline.firstElementChild.textContent = unsure ? "Probably none of the ten classes" : top;
    headline.lastElementChild.textContent = unsure ? `closest: ${top}` : "";
    root.classList.toggle("unsure", unsure);
    bars.forEach((li, i) => {
      li.querySelector("i").style.width = `${(100 * shown[i]).toFixed(1)}%`;
      li.querySelector(".pct").textContent = `${Math.round(100 * shown[i])}%`;
    });
  }

  async function loop() {
    if (!running) return;
    if (video.readyState >= 2 && video.videoWidth) {
      canvas.width = video.videoWidth; canvas.height = video.videoHeight; // the whole frame, unscaled
      ctx.drawImage(video, 0, 0);
      const frame = ctx.getImageData(0, 0, canvas.width, canvas.height);
      const t0 = performance.now();
      const { probabilities, unsure: m } = await classify(frame.data, frame.width, frame.height);
      stats.ms.push(performance.now() - t0);
      stats.frames += 1;
      if (running) show(probabilities, m);
    }
    requestAnimationFrame(loop);
  }

  async function start() {
    button.disabled = true;
    try {
      stream = await navigator.mediaDevices.getUserMedia(
        { video: { facingMode: { ideal: "environment" }, width: { ideal: 640 }, height: { ideal: 480 } } });
    } catch (err) {
      button.disabled = false;
      say(err.name === "NotAllowedError"
        ? "The camera is blocked. Allow it for this site (the camera icon in the address bar or the site " +
          "settings), then press Start again."
        : `No camera could be opened (${err.message}).`);
      return;
    }
    video.srcObject = stream;
    // A front camera's preview is mirrored, like a mirror; the pixels classified are not.
    video.classList.toggle("mirror", stream.getVideoTracks()[0].getSettings().facingMode !== "environment");
    await video.play();
    running = true;
    button.textContent = "Stop the camera";
    button.disabled = false;
    say("Runs on your device: your camera frames are not sent anywhere.");
    requestAnimationFrame(loop);
  }

  function stop() {
    running = false;
    stream?.getTracks().forEach((t) => t.stop());
    video.srcObject = null;
    button.textContent = "Start the camera";
  }

  button.addEventListener("click", () => (running ? stop() : start()));
  button.disabled = false;
  say("Runs on your device: your camera frames are not sent anywhere. Press Start.");
  return { classify, stats, stop };
}
