// Upload: a button that sends the chosen files to the kernel in chunks, each well under the Jupyter server's
// 10 MiB websocket message limit (ipywidgets' FileUpload sends a file in one message, and a larger one drops the
// connection). Files over the widget's max_bytes are refused here, before anything is sent, and the kernel is told.

function render({ model, el }) {
  const input = el.appendChild(document.createElement("input"));
  input.type = "file";
  input.multiple = true;
  input.accept = model.get("accept");
  input.style.display = "none";
  const button = el.appendChild(document.createElement("button"));
  button.className = "jupyter-widgets jupyter-button widget-button widget-upload";
  button.textContent = model.get("description");
  button.title = "Images up to " + Math.round(model.get("max_bytes") / 2 ** 20) + " MiB";
  button.addEventListener("click", () => input.click());
  model.on("change:description", () => (button.textContent = model.get("description")));

  input.addEventListener("change", async () => {
    const files = [...input.files];
    input.value = ""; // the same file can be chosen again
    const limit = model.get("max_bytes");
    const size = model.get("chunk_bytes");
    for (const file of files) {
      if (file.size > limit) {
        model.send({ event: "refused", name: file.name, size: file.size });
        continue;
      }
      const id = Math.random().toString(36).slice(2);
      const count = Math.max(1, Math.ceil(file.size / size));
      for (let index = 0; index < count; index++) {
        const part = await file.slice(index * size, (index + 1) * size).arrayBuffer();
        model.send({ event: "chunk", id, name: file.name, size: file.size, index, count }, undefined, [part]);
      }
    }
  });
}

export default { render };
