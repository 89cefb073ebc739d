() => {
  // Once the page is drawn and whenever Gradio redraws part of it: the answer is a live region (screen
  // readers announce it), each example button is named after its picture (Gradio gives them none), and
  // Gradio's empty-output placeholders, named on a plain div (which axe calls aria-prohibited-attr), get a role.
  const mark = () => {
    document.getElementById("answer")?.setAttribute("aria-live", "polite");
    document.querySelectorAll(".empty[aria-label]:not([role])").forEach((box) => box.setAttribute("role", "img"));
    document.querySelectorAll("#examples button.gallery-item").forEach((button) => {
      const img = button.querySelector("img");
      if (img && !button.getAttribute("aria-label")) {
        const name = decodeURIComponent(img.src.split("/").pop()).replace(/_\d+\.\w+$/, "");
        button.setAttribute("aria-label", `Example: ${name}`);
      }
    });
  };
  new MutationObserver(mark).observe(document.body, { childList: true, subtree: true });
  mark();
  // A blocked camera: Gradio's webcam fails silently (an uncaught NotAllowedError); say what to do.
  window.addEventListener("unhandledrejection", (event) => {
    if (event.reason?.name !== "NotAllowedError" || document.getElementById("camera-blocked")) return;
    const note = document.createElement("p");
    note.id = "camera-blocked";
    note.setAttribute("role", "alert");
    note.textContent = "The camera is blocked. Allow it for this site (the camera icon in the address bar, or " +
      "the site settings), then try again; or upload a photo instead.";
    document.getElementById("picture")?.before(note);
  });
}
