// ImageView: an image (PNG or JPEG bytes) with a title, a colour bar, and for channel grids the channel, position
// and value under the pointer (the value is asked of the kernel, one request at a time) and click-to-zoom.
// Shipped inside the explorer package and served by anywidget with the widget's state: no CDN.

function locate(grid, img, event) {
  if (!grid || !grid.cols || !img.naturalWidth) return null;
  const rect = img.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * img.naturalWidth) / rect.width - grid.pad;
  const y = ((event.clientY - rect.top) * img.naturalHeight) / rect.height - grid.pad;
  const [th, tw] = grid.tile;
  const col = Math.floor(x / (tw + grid.pad));
  const row = Math.floor(y / (th + grid.pad));
  const dx = x - col * (tw + grid.pad);
  const dy = y - row * (th + grid.pad);
  if (col < 0 || row < 0 || col >= grid.cols || dx >= tw || dy >= th) return null;
  const position = row * grid.cols + col;
  if (position >= grid.channels.length) return null;
  return {
    channel: grid.channels[position],
    row: Math.floor((dy * grid.map[0]) / th),
    col: Math.floor((dx * grid.map[1]) / tw),
  };
}

function render({ model, el }) {
  el.classList.add("explorer-iv");
  const title = el.appendChild(document.createElement("div"));
  title.className = "explorer-iv-title";
  const box = el.appendChild(document.createElement("div"));
  box.className = "explorer-iv-box";
  const img = box.appendChild(document.createElement("img"));
  img.className = "explorer-iv-img";
  img.draggable = false;
  const mark = box.appendChild(document.createElement("div"));
  mark.className = "explorer-iv-mark";
  const cells = box.appendChild(document.createElement("div"));
  const tip = box.appendChild(document.createElement("div"));
  tip.className = "explorer-iv-tip";
  const bar = el.appendChild(document.createElement("div"));
  bar.className = "explorer-iv-bar";
  let url = null;
  let shown = null; // {channel, row, col} under the pointer
  let asked = 0; // when the last value request went out (ms); 0: none in flight
  let next = null; // a request waiting for the one in flight

  function showImage() {
    const data = model.get("data");
    if (!data || !data.byteLength) {
      img.removeAttribute("src");
      img.style.display = "none";
      return;
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const previous = url;
    url = URL.createObjectURL(new Blob([bytes], { type: "image/" + model.get("format") }));
    img.onload = () => {
      if (previous) URL.revokeObjectURL(previous);
      showMark();
      showMarks();
    };
    img.src = url;
    img.style.display = "";
  }

  function showMark() {
    const grid = model.get("grid");
    const position = grid && grid.channels ? grid.channels.indexOf(model.get("marked")) : -1;
    if (position < 0 || !img.naturalWidth) {
      mark.style.display = "none";
      return;
    }
    const [th, tw] = grid.tile;
    const col = position % grid.cols;
    const row = Math.floor(position / grid.cols);
    const percent = (value, whole) => (100 * value) / whole + "%";
    mark.style.left = percent(grid.pad + col * (tw + grid.pad), img.naturalWidth);
    mark.style.top = percent(grid.pad + row * (th + grid.pad), img.naturalHeight);
    mark.style.width = percent(tw, img.naturalWidth);
    mark.style.height = percent(th, img.naturalHeight);
    mark.style.display = "block";
  }

  function showMarks() {
    // locations outlined: [channel, row, col, kind], placed by the grid's geometry in percent of the image
    const grid = model.get("grid");
    cells.replaceChildren();
    if (!grid || !grid.channels || !img.naturalWidth) return;
    const [th, tw] = grid.tile;
    const percent = (value, whole) => (100 * value) / whole + "%";
    for (const [channel, row, col, kind] of model.get("marks") || []) {
      const position = grid.channels.indexOf(channel);
      if (position < 0) continue;
      const left = grid.pad + (position % grid.cols) * (tw + grid.pad) + (col * tw) / grid.map[1];
      const top = grid.pad + Math.floor(position / grid.cols) * (th + grid.pad) + (row * th) / grid.map[0];
      const cell = cells.appendChild(document.createElement("div"));
      cell.className = "explorer-iv-cell " + kind;
      cell.style.left = percent(left, img.naturalWidth);
      cell.style.top = percent(top, img.naturalHeight);
      cell.style.width = percent(tw / grid.map[1], img.naturalWidth);
      cell.style.height = percent(th / grid.map[0], img.naturalHeight);
    }
  }

  function showSize() {
    const width = model.get("width");
    img.style.width = width ? width + "px" : "";
    el.style.maxWidth = "100%";
  }

  function showTitle() {
    title.textContent = model.get("title");
    title.style.display = model.get("title") ? "" : "none";
  }

  function showBar() {
    const scale = model.get("colorbar");
    bar.replaceChildren();
    if (!scale || !scale.colors || !scale.colors.length) {
      bar.style.display = "none";
      return;
    }
    bar.style.display = "";
    const low = bar.appendChild(document.createElement("span"));
    low.textContent = scale.low;
    const ramp = bar.appendChild(document.createElement("span"));
    ramp.className = "explorer-iv-ramp";
    ramp.style.background = "linear-gradient(to right, " + scale.colors.join(", ") + ")";
    const high = bar.appendChild(document.createElement("span"));
    high.textContent = scale.high;
    if (scale.note) {
      const note = bar.appendChild(document.createElement("span"));
      note.className = "explorer-iv-note";
      note.textContent = scale.note;
    }
  }

  function ask(at) {
    if (asked && performance.now() - asked < 1000) {
      next = at; // one request at a time; the newest waiting one goes next
      return;
    }
    asked = performance.now();
    model.send({ event: "hover", channel: at.channel, row: at.row, col: at.col });
  }

  function describe(at, value) {
    const where = `${model.get("grid").unit || "channel"} ${at.channel} · (${at.row}, ${at.col})`;
    return value === undefined ? where : `${where} · ${value}`;
  }

  img.addEventListener("mousemove", (event) => {
    const at = locate(model.get("grid"), img, event);
    if (!at) {
      tip.style.display = "none";
      shown = null;
      return;
    }
    const rect = box.getBoundingClientRect();
    tip.style.left = event.clientX - rect.left + 12 + "px";
    tip.style.top = event.clientY - rect.top + 12 + "px";
    tip.style.display = "block";
    if (shown && shown.channel === at.channel && shown.row === at.row && shown.col === at.col) return;
    shown = at;
    tip.textContent = describe(at);
    ask(at);
  });
  img.addEventListener("mouseleave", () => {
    tip.style.display = "none";
    shown = null;
  });
  img.addEventListener("click", (event) => {
    const at = locate(model.get("grid"), img, event);
    if (at && model.get("clickable")) model.send({ event: "click", channel: at.channel, row: at.row, col: at.col });
  });

  function onMessage(message) {
    if (!message || !message.hover) return;
    asked = 0;
    const h = message.hover;
    if (shown && h.channel === shown.channel && h.row === shown.row && h.col === shown.col) {
      tip.textContent = describe(h, h.value);
    }
    if (next) {
      const waiting = next;
      next = null;
      ask(waiting);
    }
  }

  model.on("change:data", showImage);
  model.on("change:width", showSize);
  model.on("change:title", showTitle);
  model.on("change:colorbar", showBar);
  model.on("change:marked", showMark);
  model.on("change:grid", showMark);
  model.on("change:grid", showMarks);
  model.on("change:marks", showMarks);
  model.on("change:clickable", () => el.classList.toggle("explorer-iv-clickable", model.get("clickable")));
  model.on("msg:custom", onMessage);
  el.classList.toggle("explorer-iv-clickable", model.get("clickable"));
  showImage();
  showSize();
  showTitle();
  showBar();
  return () => {
    if (url) URL.revokeObjectURL(url);
  };
}

export default { render };
