// dermlens page: send the photo to /api/v1/predict, draw the answer. Plain DOM, no framework, no CDN.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let limits = { max_upload_bytes: 20000000 };
  let photoUrl = null;
  let overlayUrl = null;
  let busy = false;

  function percent(p) {
    if (p > 0 && p < 0.01) return "<1%";
    return Math.round(100 * p) + "%";
  }

  function megabytes(n) {
    if (n < 1e6) return Math.ceil(n / 1e3) + " kB";
    return (n / 1e6).toFixed(n >= 1e7 ? 0 : 1) + " MB";
  }

  function setStatus(text) {
    $("status").textContent = text;
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = !text;
  }

  function bar(name, probability, options) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = (100 * Math.max(0, Math.min(1, probability))).toFixed(1) + "%";
    track.appendChild(fill);
    if (options && options.threshold !== undefined) {
      const mark = document.createElement("span");
      mark.className = "threshold";
      mark.title = "referral threshold " + percent(options.threshold);
      mark.style.left = (100 * options.threshold).toFixed(1) + "%";
      track.appendChild(mark);
      li.classList.add("operating-node");
    }
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(probability);
    li.append(label, track, value);
    li.setAttribute("aria-label", name + ": " + percent(probability));
    li.dataset.node = options && options.node ? options.node : "";
    li.dataset.probability = String(probability);
    return li;
  }

  function fillBars(list, items, op) {
    list.replaceChildren(
      ...items.map((item) =>
        bar(item.name, item.probability, {
          node: item.node,
          threshold: op && item.node === op.node ? op.threshold : undefined,
        })
      )
    );
  }

  function showPicture(which) {
    const overlay = which === "overlay" && overlayUrl;
    $("view").src = overlay ? overlayUrl : photoUrl;
    $("view").alt = overlay ? "The photo with the saliency overlay" : "The photo as taken";
    $("show-overlay").setAttribute("aria-pressed", String(!!overlay));
    $("show-photo").setAttribute("aria-pressed", String(!overlay));
  }

  function render(answer) {
    const op = answer.operating_point;
    const refer = answer.triage === "refer";
    // The photo gate stopped it: say in plain words what to do (retake, or see a doctor), not a diagnosis.
    const stopped = answer.triage === "retake" || answer.triage === "cannot_assess";
    const card = $("triage");
    card.classList.toggle("refer", refer);
    card.classList.toggle("reassure", !refer && !stopped);
    card.classList.toggle("stopped", stopped);
    card.dataset.triage = answer.triage;
    const wide = answer.gate && answer.gate.verdict === "wide_field"; // several spots: screening, not one answer
    $("triage-call").textContent = stopped
      ? (wide ? "Several spots? Use screening" : answer.triage === "retake" ? "Please take the photo again" : "Cannot assess this photo")
      : (refer ? "Refer" : "No referral suggested");
    $("triage-text").textContent = answer.triage_summary;
    const kind = answer.modality
      ? "Read as a " + answer.modality + " photo (" + (answer.modality_source === "given" ? "as you said" : "recognised from the photo") + "). "
      : "";
    $("operating-point").textContent = kind + op.summary;

    fillBars($("three-way"), answer.three_way, op);
    fillBars($("nine-way"), answer.nine_way, op);
    fillBars(
      $("top5"),
      answer.top5.map((t) => ({ node: t.node, name: answer.names[t.node] || t.node, probability: t.probability })),
      null
    );

    if (answer.saliency) {
      overlayUrl = "data:image/png;base64," + answer.saliency.png_base64;
      const method = answer.saliency.method === "gradcam" ? "Grad-CAM" : "Input gradient";
      $("view-caption").textContent =
        method + " for " + answer.saliency.target_name +
        ": warm colours mark the parts of the photo that most raised the model's score for it. " +
        "The overlay covers the square the model looked at.";
    } else {
      overlayUrl = null;
      $("view-caption").textContent = "No saliency overlay was requested.";
    }
    $("show-overlay").disabled = !overlayUrl;
    showPicture(overlayUrl ? "overlay" : "photo");
    $("result").hidden = false;
  }

  async function analyse(file) {
    if (!file || busy) return;
    showError("");
    if (file.size > limits.max_upload_bytes) {
      showError(
        "This photo is " + megabytes(file.size) + ", more than the limit of " +
        megabytes(limits.max_upload_bytes) + ". Send a smaller or more compressed image (JPEG)."
      );
      return;
    }
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    photoUrl = URL.createObjectURL(file);

    const form = new FormData();
    form.append("image", file, file.name || "photo.jpg");
    for (const id of ["modality", "age", "sex", "site"]) {
      const value = $(id).value.trim();
      if (value) form.append(id, value);
    }
    busy = true;
    document.body.classList.add("busy");
    setStatus("Analysing " + (file.name || "the photo") + " ...");
    const started = performance.now();
    try {
      const response = await fetch("/api/v1/predict", { method: "POST", body: form });
      let body = null;
      try {
        body = await response.json();
      } catch (e) {
        body = null;
      }
      if (!response.ok) {
        let message = body && body.detail ? body.detail : response.statusText;
        if (typeof message !== "string") message = JSON.stringify(message);
        const retry = response.headers.get("Retry-After");
        if (retry) message += " (retry in " + retry + " s)";
        showError("The photo could not be analysed (HTTP " + response.status + "): " + message);
        setStatus("");
        $("result").hidden = true;
        return;
      }
      render(body);
      setStatus("Analysed in " + ((performance.now() - started) / 1000).toFixed(1) + " s.");
    } catch (e) {
      showError("Could not reach the dermlens service (" + e.message + "). Check the connection and try again.");
      setStatus("");
    } finally {
      busy = false;
      document.body.classList.remove("busy");
    }
  }

  async function loadModelInfo() {
    try {
      const response = await fetch("/api/v1/model");
      if (!response.ok) return;
      const model = await response.json();
      limits = model.service || limits;
      $("model-info").textContent =
        "Model: " + model.arch + " at " + model.input_size + " px, " + model.classes.length +
        " disease classes, taxonomy " + model.taxonomy.version + ". " + model.operating_point.summary;
    } catch (e) {
      /* the page still works without the footer */
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const id of ["camera", "file"]) {
      $(id).addEventListener("change", (event) => {
        const file = event.target.files && event.target.files[0];
        analyse(file);
        event.target.value = ""; // choosing the same file again still triggers an analysis
      });
    }
    $("show-overlay").addEventListener("click", () => showPicture("overlay"));
    $("show-photo").addEventListener("click", () => showPicture("photo"));
    loadModelInfo();
  });
})();
