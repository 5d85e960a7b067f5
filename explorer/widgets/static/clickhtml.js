// ClickHTML: HTML (a table, an SVG chart) whose elements carrying data-channel are clickable: a click sends the
// channel to the kernel. Shipped inside the explorer package: no CDN.

function render({ model, el }) {
  el.classList.add("explorer-click-html");
  const show = () => {
    el.innerHTML = model.get("value");
  };
  el.addEventListener("click", (event) => {
    const target = event.target.closest("[data-channel]");
    if (target && el.contains(target)) model.send({ event: "click", channel: Number(target.dataset.channel) });
  });
  model.on("change:value", show);
  show();
}

export default { render };
