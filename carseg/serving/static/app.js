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
    state.textContent = `done: ${(blob.size / 1024).toFixed(0)} KB PNG`;
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
