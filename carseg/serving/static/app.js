// carseg's page: each photo goes to POST /api/remove; its transparent PNG cut-out is shown over the chosen
// background, with the original photo on the left of the slider (before/after), and can be downloaded.
const $ = (id) => document.getElementById(id);
const status = $("status");
let bgImageUrl = null;

function background() {
  const kind = document.querySelector("input[name=bg]:checked").value;
  if (kind === "colour") return $("colour").value;
  if (kind === "gradient") return `linear-gradient(${$("top").value}, ${$("bottom").value})`;
  if (kind === "image" && bgImageUrl) return `center / cover url(${bgImageUrl})`;
  return "repeating-conic-gradient(#ddd 0 25%, #fff 0 50%) 0 0 / 20px 20px";
}

function paintBackgrounds() {
  const bg = background();
  document.querySelectorAll(".compare .after").forEach((img) => { img.style.background = bg; });
}

async function cutOut(file) {
  const card = $("card").content.firstElementChild.cloneNode(true);
  card.querySelector("h2").textContent = file.name;
  const before = card.querySelector(".before");
  const after = card.querySelector(".after");
  before.src = URL.createObjectURL(file);
  card.querySelector(".slider").addEventListener("input", (e) => { before.style.clipPath = `inset(0 ${100 - e.target.value}% 0 0)`; });
  $("results").prepend(card);
  const form = new FormData();
  form.append("file", file);
  const state = card.querySelector(".state");
  try {
    const response = await fetch("/api/remove", { method: "POST", body: form });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.detail || `HTTP ${response.status}`);
    }
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    after.src = url;
    after.dataset.ready = "1";
    const link = card.querySelector(".download");
    link.href = url;
    link.download = file.name.replace(/\.[^.]+$/, "") + "_cutout.png";
    const quality = response.headers.get("X-Carseg-Quality");
    const target = response.headers.get("X-Carseg-Quality-Target");
    const shown = target === "raw" ? "raw quality" : `predicted ${target === "iou" ? "IoU" : "edge F1"}`;
    state.textContent = `done: ${(blob.size / 1024).toFixed(0)} KB PNG` + (quality ? `, ${shown} ${quality}` : "");
    card.dataset.quality = quality || "";
    card.querySelector(".badge").hidden = response.headers.get("X-Carseg-Review") !== "1";
    const zoom = card.querySelector(".zoom");
    zoom.disabled = false;
    zoom.addEventListener("click", () => openViewer(url, file.name));
    card.classList.add("done");
    paintBackgrounds();
  } catch (err) {
    state.textContent = `failed: ${err.message}`;
    state.classList.add("error");
    card.classList.add("failed");
  }
}

async function handle(files) {
  const list = [...files].filter((f) => f.type.startsWith("image/"));
  status.textContent = `${list.length} photo(s)…`;
  for (const file of list) await cutOut(file);
  status.textContent = `${list.length} photo(s) done`;
}

$("photos").addEventListener("change", (e) => handle(e.target.files));
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => handle(e.dataTransfer.files));
document.querySelectorAll("#controls input").forEach((el) => el.addEventListener("input", paintBackgrounds));
$("bgimage").addEventListener("change", (e) => {
  if (e.target.files[0]) { bgImageUrl = URL.createObjectURL(e.target.files[0]); document.querySelector("input[name=bg][value=image]").checked = true; }
  paintBackgrounds();
});

// the full-size view: the cut-out at its own pixels (zoom with the buttons or the wheel, pan by dragging)
let zoomLevel = 1;
function setZoom(level) {
  const img = $("viewer-image");
  zoomLevel = Math.min(8, Math.max(0.05, level));
  img.style.width = `${img.naturalWidth * zoomLevel}px`;
  $("zoom-level").textContent = `${Math.round(zoomLevel * 100)}%`;
}
function fitZoom() {
  const img = $("viewer-image"), port = $("viewport");
  setZoom(Math.min(port.clientWidth / img.naturalWidth, port.clientHeight / img.naturalHeight));
}
function openViewer(url, name) {
  const img = $("viewer-image");
  $("viewer-name").textContent = name;
  img.onload = () => setZoom(1);
  img.src = url;
  $("viewer").showModal();
}
$("zoom-in").addEventListener("click", () => setZoom(zoomLevel * 1.5));
$("zoom-out").addEventListener("click", () => setZoom(zoomLevel / 1.5));
$("zoom-fit").addEventListener("click", fitZoom);
$("viewer-close").addEventListener("click", () => $("viewer").close());
$("viewport").addEventListener("wheel", (e) => { e.preventDefault(); setZoom(zoomLevel * (e.deltaY < 0 ? 1.25 : 0.8)); }, { passive: false });
let drag = null;
$("viewport").addEventListener("pointerdown", (e) => { const p = $("viewport"); drag = { x: e.clientX, y: e.clientY, left: p.scrollLeft, top: p.scrollTop }; });
window.addEventListener("pointerup", () => { drag = null; });
$("viewport").addEventListener("pointermove", (e) => {
  if (!drag) return;
  const p = $("viewport");
  p.scrollLeft = drag.left - (e.clientX - drag.x);
  p.scrollTop = drag.top - (e.clientY - drag.y);
});
