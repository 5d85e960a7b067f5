// Camera: the browser's camera (getUserMedia) as an image source for the kernel. Frames are drawn into a canvas
// at the widget's `width`, encoded as JPEG and sent as one binary buffer each, at most `max_fps` a second and
// never while the kernel has not acknowledged the previous frame (back-pressure: frames in between are dropped,
// so nothing queues up behind a slow model). Where the camera cannot be had (no getUserMedia: VS Code's webview,
// a page that is not https or localhost; permission denied; no device) the reason goes to the `error` trait.

const STALE_ACK_MS = 10000; // an acknowledgement lost (kernel restarted): send again after this long

function render({ model, el }) {
  const box = el.appendChild(document.createElement("div"));
  box.className = "explorer-camera";
  const video = box.appendChild(document.createElement("video"));
  video.muted = true;
  video.playsInline = true;
  video.autoplay = true;
  video.style.width = model.get("preview_width") + "px";
  const note = box.appendChild(document.createElement("div"));
  note.className = "explorer-camera-note";
  const canvas = document.createElement("canvas");
  let stream = null;
  let stopped = false;
  let timer = null;
  let seq = 0;
  let pending = null; // the seq of the frame the kernel has not acknowledged yet, and when it was sent
  let sentAt = 0;

  const fail = (message) => {
    video.style.display = "none"; // no stream: an empty frame would only take room
    note.textContent = message;
    model.set("error", message);
    model.save_changes();
  };

  model.on("msg:custom", (msg) => {
    if (msg && msg.ack !== undefined && msg.ack === pending) {
      pending = null;
      schedule(); // the next frame goes as soon as the rate allows, not at the next tick of a fixed clock
    }
  });

  // The next tick: one frame interval after the last frame sent (at once if that has passed). A tick that
  // finds the kernel still drawing sends nothing and waits for the acknowledgement, which schedules again.
  // `idle`: the last tick could send nothing (paused, no video yet): look again one interval later.
  function schedule(idle = false) {
    if (stopped) return;
    clearTimeout(timer);
    const interval = 1000 / Math.max(0.1, model.get("max_fps"));
    const due = idle ? performance.now() + interval : sentAt + (pending === null ? interval : STALE_ACK_MS);
    timer = setTimeout(tick, Math.max(0, due - performance.now()));
  }

  function tick() {
    const now = performance.now();
    const free = pending === null || now - sentAt > STALE_ACK_MS;
    const ready = model.get("active") && video.readyState >= 2 && video.videoWidth > 0;
    if (free && ready) {
      const width = model.get("width");
      const height = Math.max(1, Math.round((width * video.videoHeight) / video.videoWidth));
      canvas.width = width;
      canvas.height = height;
      canvas.getContext("2d").drawImage(video, 0, 0, width, height);
      seq += 1;
      pending = seq;
      sentAt = now;
      const sending = seq;
      canvas.toBlob(
        async (blob) => {
          if (stopped || !blob) return;
          const buffer = await blob.arrayBuffer();
          model.send({ event: "frame", seq: sending, width, height }, undefined, [buffer]);
        },
        "image/jpeg",
        model.get("quality"),
      );
    }
    schedule(!ready);
  }

  async function start() {
    const media = navigator.mediaDevices;
    if (!media || typeof media.getUserMedia !== "function") {
      fail(
        "This front end gives no camera: navigator.mediaDevices.getUserMedia is missing (VS Code's webview, or a " +
          "page not served over https or localhost). Open the notebook in JupyterLab on localhost or https.",
      );
      return;
    }
    try {
      stream = await media.getUserMedia({ video: { width: { ideal: 640 } }, audio: false });
    } catch (err) {
      const fixes = {
        NotAllowedError: "Allow camera access for this page (the browser's site settings).",
        NotFoundError: "Connect a camera.",
        NotReadableError: "Close the other program that holds the camera.",
      };
      fail(`The camera could not be opened (${err.name}: ${err.message}). ${fixes[err.name] || ""}`.trim());
      return;
    }
    if (stopped) {
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    video.srcObject = stream;
    try {
      await video.play();
    } catch (err) {
      fail(`The camera stream does not play (${err.name}: ${err.message}).`);
      return;
    }
    if (model.get("error")) {
      model.set("error", "");
      model.save_changes();
    }
    schedule();
  }

  start();
  return () => {
    stopped = true;
    clearTimeout(timer);
    if (stream) stream.getTracks().forEach((track) => track.stop());
  };
}

export default { render };
