// The book's "Try it" page: the shipped UltraLight VM-UNet segments a photo inside the reader's browser.
// Nothing is uploaded anywhere: the file is decoded, resized and segmented on this machine by
// onnxruntime-web (WebAssembly); the page makes no request but for its own files.
//
// Every step follows `ulvm.predict` (ulvm/deploy/prediction.py), so the page's mask is the one `ulvm predict`
// writes for the same file:
//   1. decode the file to RGB, turned upright by its EXIF orientation, with no colour management
//      (PIL applies none either): `read_image(path, upright=True)`;
//   2. resize to the model's 256 x 256 with PIL's bilinear filter, integer arithmetic and all
//      (`Image.resize(..., Image.BILINEAR)`; `resizePil` below);
//   3. normalise the paper's way, each image min-max stretched to 0..255 (`paper_normalize`);
//   4. run ulvm.onnx, exported from the shipped weights by `ulvm export` when the book was built:
//      "image" (1, 3, 256, 256) float32 -> "prob" (1, 1, 256, 256) lesion probabilities;
//   5. resize the probabilities back to the photo's own size as torch's
//      `F.interpolate(mode="bilinear", align_corners=False)` does (`resizeTorch`, float32 arithmetic);
//   6. lesion where probability >= 0.5.
// What can still differ from Python: the JPEG decoder (Chromium's against Pillow's libjpeg) and the model's
// float arithmetic (WebAssembly against PyTorch); the book's browser test measures the two masks' agreement.
// Rarer files differ more: a 16-bit image reaches this script as 8 bits (Python stretches a 16-bit grey one
// by its range), and a transparent pixel's colour is lost in the canvas (Pillow keeps it and drops alpha).
(() => {
  "use strict";

  const SIZE = 256;                 // the model's input size, fixed in the ONNX file
  const THRESHOLD = 0.5;            // `ulvm predict --threshold` default
  const MIN_SIDE = 32;              // smaller than this holds no lesion worth segmenting (a page rule)
  const MAX_PIXELS = 50e6;          // larger images would need gigabytes of browser memory (a page rule)
  const HERE = document.currentScript.src.replace(/[^/]*$/, "");   // the folder of this script and the model

  const $ = (id) => document.getElementById(id);

  // ---- 2. PIL's bilinear resize (Pillow's src/libImaging/Resample.c), for RGBA pixels ----------------------

  // Pillow keeps 8-bit resampling weights as integers with this many fraction bits.
  const PRECISION_BITS = 32 - 8 - 2;
  const ONE = 2 ** PRECISION_BITS;

  // The weights of one axis (`precompute_coeffs` + `normalize_coeffs_8bpc`): output pixel i reads input pixels
  // first[i] .. first[i] + count[i] - 1 with weights[i * taps + k]. When downscaling, the triangle filter is
  // widened by the scale, so each output pixel averages every input pixel under it (a canvas's drawImage
  // does not: that is why this page resizes in JavaScript).
  function pilWeights(inSize, outSize) {
    const scale = inSize / outSize;
    const filterScale = Math.max(scale, 1);
    const support = 1.0 * filterScale;                // the bilinear filter's support is 1
    const taps = Math.ceil(support) * 2 + 1;
    const first = new Int32Array(outSize), count = new Int32Array(outSize);
    const weights = new Float64Array(outSize * taps);
    const inverse = 1.0 / filterScale;
    for (let i = 0; i < outSize; i++) {
      const center = (i + 0.5) * scale;
      const lo = Math.max(Math.trunc(center - support + 0.5), 0);
      const n = Math.min(Math.trunc(center + support + 0.5), inSize) - lo;
      let total = 0;
      for (let k = 0; k < n; k++) {
        const w = Math.max(1.0 - Math.abs((k + lo - center + 0.5) * inverse), 0);
        weights[i * taps + k] = w;
        total += w;
      }
      for (let k = 0; k < n; k++) {
        const w = total !== 0 ? weights[i * taps + k] / total : weights[i * taps + k];
        weights[i * taps + k] = Math.trunc(w < 0 ? w * ONE - 0.5 : w * ONE + 0.5);
      }
      first[i] = lo;
      count[i] = n;
    }
    return { first, count, weights, taps };
  }

  // One pass along x (stride 4, the next pixel) or y (stride 4 * width, the next row): Pillow's
  // ImagingResampleHorizontal/Vertical_8bpc, rounding half up and clipping to 0..255 after each pass.
  function resizeAxis(src, width, height, outWidth, outHeight, alongX) {
    const axis = pilWeights(alongX ? width : height, alongX ? outWidth : outHeight);
    const out = new Uint8ClampedArray(outWidth * outHeight * 4);
    const step = alongX ? 4 : 4 * width;
    for (let y = 0; y < outHeight; y++) {
      for (let x = 0; x < outWidth; x++) {
        const i = alongX ? x : y;                              // the output index along this axis
        const start = alongX ? (y * width + axis.first[i]) * 4 : (axis.first[i] * width + x) * 4;
        const o = (y * outWidth + x) * 4;
        for (let c = 0; c < 3; c++) {
          let sum = ONE / 2;
          for (let k = 0; k < axis.count[i]; k++) sum += src[start + k * step + c] * axis.weights[i * axis.taps + k];
          out[o + c] = Math.floor(sum / ONE);                 // Uint8ClampedArray clips to 0..255
        }
        out[o + 3] = 255;
      }
    }
    return out;
  }

  // `Image.fromarray(rgb).resize((outWidth, outHeight), Image.BILINEAR)`: along rows first, then along
  // columns, an axis only when its size changes. That is Pillow's order for a photo shrunk to 256 x 256;
  // Pillow 13 takes the columns first for some shapes (a tall narrow image), where a value can then differ
  // by one grey level. Pixels: RGBA bytes (alpha ignored); returns RGBA bytes.
  function resizePil(rgba, width, height, outWidth, outHeight) {
    let pixels = rgba;
    if (outWidth !== width) pixels = resizeAxis(pixels, width, height, outWidth, height, true);
    if (outHeight !== height) pixels = resizeAxis(pixels, outWidth, height, outWidth, outHeight, false);
    return pixels;
  }

  // ---- 3. the paper's normalisation (ulvm.data.dataset.paper_normalize with mean 0, std 1) -----------------

  // RGBA bytes (SIZE x SIZE) -> float32 (1, 3, SIZE, SIZE): one min and max over all pixels and channels,
  // then (x - min) * 255 / (max - min) in float32, as NumPy computes it; a constant image becomes zeros.
  function paperNormalize(rgba) {
    let low = 255, high = 0;
    for (let p = 0; p < rgba.length; p += 4) {
      for (let c = 0; c < 3; c++) { low = Math.min(low, rgba[p + c]); high = Math.max(high, rgba[p + c]); }
    }
    const span = high - low;
    const scale = Math.fround(255 / (span === 0 ? 1 : span));
    const plane = SIZE * SIZE;
    const out = new Float32Array(3 * plane);                  // a Float32Array rounds each product to float32
    for (let p = 0; p < plane; p++) {
      for (let c = 0; c < 3; c++) out[c * plane + p] = (rgba[p * 4 + c] - low) * scale;
    }
    return out;
  }

  // ---- 5. torch's bilinear resize (align_corners=False), float32 ---------------------------------------------

  // For output index i: source position (i + 0.5) * in / out - 0.5, clamped at 0; the two neighbours and
  // their weights (ATen's area_pixel_compute_source_index + guard_index_and_lambda).
  function torchWeights(inSize, outSize) {
    const f = Math.fround, scale = f(inSize / outSize);
    const lo = new Int32Array(outSize), hi = new Int32Array(outSize);
    const w0 = new Float32Array(outSize), w1 = new Float32Array(outSize);
    for (let i = 0; i < outSize; i++) {
      const source = Math.max(f(f(scale * (i + 0.5)) - 0.5), 0);
      lo[i] = Math.min(Math.floor(source), inSize - 1);
      hi[i] = Math.min(lo[i] + 1, inSize - 1);
      w1[i] = Math.min(Math.max(f(source - lo[i]), 0), 1);
      w0[i] = f(1 - w1[i]);
    }
    return { lo, hi, w0, w1 };
  }

  // probabilities (SIZE x SIZE) -> the mask at (width x height): 1 where the resized probability >= 0.5.
  function maskAtSize(prob, width, height) {
    const f = Math.fround, xs = torchWeights(SIZE, width), ys = torchWeights(SIZE, height);
    const mask = new Uint8Array(width * height);
    for (let y = 0; y < height; y++) {
      const top = ys.lo[y] * SIZE, bottom = ys.hi[y] * SIZE;
      for (let x = 0; x < width; x++) {
        const l = xs.lo[x], r = xs.hi[x];
        const upper = f(f(prob[top + l] * xs.w0[x]) + f(prob[top + r] * xs.w1[x]));
        const lower = f(f(prob[bottom + l] * xs.w0[x]) + f(prob[bottom + r] * xs.w1[x]));
        mask[y * width + x] = f(f(upper * ys.w0[y]) + f(lower * ys.w1[y])) >= THRESHOLD ? 1 : 0;
      }
    }
    return mask;
  }

  // ---- the page -----------------------------------------------------------------------------------------------

  // Show a one-line message; the state ("loading", "ready", "working", "done", "error") is also set as
  // data-state, which the book's browser test waits on.
  function say(state, message) {
    const status = $("tryit-status");
    status.dataset.state = state;
    status.textContent = message;
    status.className = "tryit-status tryit-" + state;
  }

  class InputError extends Error {}

  // 1. A file -> its RGBA pixels at its own size, turned upright, decoded without colour management.
  async function decode(file) {
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, { imageOrientation: "from-image", colorSpaceConversion: "none",
                                               premultiplyAlpha: "none" });
    } catch (error) {
      throw new InputError(`${file.name}: not an image this browser can read (JPEG or PNG expected)`);
    }
    const { width, height } = bitmap;
    if (Math.min(width, height) < MIN_SIDE) {
      bitmap.close();
      throw new InputError(`${file.name}: ${width} × ${height} pixels is too small to segment ` +
                           `(at least ${MIN_SIDE} × ${MIN_SIDE})`);
    }
    if (width * height > MAX_PIXELS) {
      bitmap.close();
      throw new InputError(`${file.name}: ${width} × ${height} pixels (${(width * height / 1e6).toFixed(0)} ` +
                           `megapixels) is more than this page handles (${MAX_PIXELS / 1e6} megapixels at most); ` +
                           "scale it down, " +
                           "or use `ulvm predict`, which takes any size");
    }
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext("2d", { willReadFrequently: true });
    context.drawImage(bitmap, 0, 0);
    bitmap.close();
    return { width, height, rgba: context.getImageData(0, 0, width, height).data };
  }

  // The photo with the lesion tinted red and outlined (as `ulvm predict --overlay` outlines it), and the
  // mask itself (white lesion on black, the pixels `ulvm predict` writes to <stem>_mask.png).
  function draw(image, mask) {
    const { width, height, rgba } = image;
    const shown = new ImageData(width, height), maskPixels = new ImageData(width, height);
    for (let p = 0; p < width * height; p++) {
      const x = p % width, y = (p - x) / width, inside = mask[p] === 1;
      // an outline pixel is inside with a 4-neighbour outside (ulvm.engine.inference.outline; edges count as inside)
      const edge = inside && ((x > 0 && !mask[p - 1]) || (x < width - 1 && !mask[p + 1]) ||
                              (y > 0 && !mask[p - width]) || (y < height - 1 && !mask[p + width]));
      for (let c = 0; c < 3; c++) {
        const red = c === 0 ? 255 : 0;
        shown.data[p * 4 + c] = edge ? red : inside ? 0.65 * rgba[p * 4 + c] + 0.35 * red : rgba[p * 4 + c];
        maskPixels.data[p * 4 + c] = inside ? 255 : 0;
      }
      shown.data[p * 4 + 3] = maskPixels.data[p * 4 + 3] = 255;
    }
    for (const [id, pixels] of [["tryit-overlay", shown], ["tryit-mask", maskPixels]]) {
      const canvas = $(id);
      canvas.width = width;                                   // the canvas has the photo's own size
      canvas.height = height;
      canvas.getContext("2d").putImageData(pixels, 0, 0);
    }
  }

  let session = null;

  async function loadModel() {
    ort.env.wasm.wasmPaths = HERE;                          // the runtime's .mjs and .wasm lie beside this script
    // Several threads need a cross-origin isolated page (special server headers); a static book has none.
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    session = await ort.InferenceSession.create(HERE + "ulvm.onnx", { executionProviders: ["wasm"] });
  }

  // Everything from the file to the drawn mask; returns the numbers the page shows.
  async function segment(file) {
    const started = performance.now();
    const image = await decode(file);
    const small = resizePil(image.rgba, image.width, image.height, SIZE, SIZE);
    const input = new ort.Tensor("float32", paperNormalize(small), [1, 3, SIZE, SIZE]);
    const modelStarted = performance.now();
    const output = await session.run({ image: input });
    const modelMs = performance.now() - modelStarted;
    const mask = maskAtSize(output.prob.data, image.width, image.height);
    draw(image, mask);
    const area = mask.reduce((sum, v) => sum + v, 0);
    return { name: file.name, width: image.width, height: image.height, area, modelMs,
             totalMs: performance.now() - started, threads: ort.env.wasm.numThreads };
  }

  async function run(file) {
    if (!session) { say("error", "The model is not loaded (see the message above)."); return; }
    say("working", `Segmenting ${file.name} in your browser…`);
    await new Promise((done) => requestAnimationFrame(() => setTimeout(done, 0)));   // let the message show
    try {
      const r = await segment(file);
      $("tryit-result").hidden = false;
      $("tryit-numbers").textContent =
        `${r.name}: ${r.width} × ${r.height} pixels; lesion ${r.area.toLocaleString("en")} pixels ` +
        `(${(100 * r.area / (r.width * r.height)).toFixed(1)}% of the image). The model took ` +
        `${r.modelMs.toFixed(0)} ms in your browser, the whole pipeline ${r.totalMs.toFixed(0)} ms.`;
      $("tryit-result").dataset.result = JSON.stringify(r);
      say("done", `Done: ${r.name}. Nothing left your machine.`);
    } catch (error) {
      $("tryit-result").hidden = true;
      say("error", error instanceof InputError ? error.message : `${file.name}: could not be segmented (${error})`);
    }
  }

  async function start() {
    say("loading", "Loading the model (about 15 MB, once)…");
    try {
      await loadModel();
    } catch (error) {
      say("error", `The model could not be loaded (${error}). The page must be opened over http(s), ` +
                   "e.g. `python -m http.server` in _build/html, not as a file.");
      return;
    }
    say("ready", "Ready: choose or drop a JPEG or PNG image, or try a sample.");
    $("tryit-file").addEventListener("change", (event) => {
      const file = event.target.files[0];
      event.target.value = "";                               // so that choosing the same file again runs again
      if (file) run(file);
    });
    const drop = $("tryit-drop");
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("tryit-over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("tryit-over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("tryit-over");
      if (event.dataTransfer.files[0]) run(event.dataTransfer.files[0]);
    });
    for (const button of document.querySelectorAll("[data-tryit-sample]")) {
      button.addEventListener("click", async () => {
        const name = button.dataset.tryitSample;
        const response = await fetch(HERE + "samples/" + name);
        run(new File([await response.blob()], name, { type: "image/png" }));
      });
    }
    $("tryit-download").addEventListener("click", () => {
      const link = document.createElement("a");
      link.download = "mask.png";
      link.href = $("tryit-mask").toDataURL("image/png");
      link.click();
    });
  }

  // For the book's browser test: the resize can be checked against PIL's bit for bit.
  window.ulvmTryIt = { resizePil, paperNormalize };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
