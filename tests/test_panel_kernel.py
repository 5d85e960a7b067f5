"""The panel in a real kernel (jupyter_client): every widget message leaves from the kernel's own thread and every
module call runs in the engine's threads, through loads, captures, a class-activation map, a scan, an upload, the
patch views, camera frames, a concepts fit and a feature visualisation; a model set during the first load ends with
the previous model shown and the error on the status line."""

from __future__ import annotations

import io
import os
import textwrap

import numpy as np
import pytest
from PIL import Image
from test_scan import write_images

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SPY = """
import threading
import ipykernel.comm.comm

senders = []  # (thread name, message type) of every widget message the kernel sends
_publish = ipykernel.comm.comm.BaseComm.publish_msg  # the kernel's comms send through here

def _spy(self, msg_type, *args, **kwargs):
    senders.append((threading.current_thread().name, msg_type))
    return _publish(self, msg_type, *args, **kwargs)

ipykernel.comm.comm.BaseComm.publish_msg = _spy

from explorer.backbones._base import Backbone

forwards = []  # the thread of every capture the panel makes
_capture = Backbone.capture

def _capture_spy(self, *args, **kwargs):
    forwards.append(threading.current_thread().name)
    return _capture(self, *args, **kwargs)

Backbone.capture = _capture_spy
"""


MODULE_SPY = """
import threading
import torch

module_threads = set()  # the thread of every module call (a forward pass, its layers, a backward's recompute)
_module_call = torch.nn.Module.__call__

main_calls = []  # where the kernel's thread called a module, if it did

def _module_call_spy(self, *args, **kwargs):
    module_threads.add(threading.current_thread().name)
    if threading.current_thread().name == "MainThread" and not main_calls:
        import traceback
        main_calls.append(type(self).__name__ + "".join(traceback.format_stack(limit=12)))
    return _module_call(self, *args, **kwargs)

torch.nn.Module.__call__ = _module_call_spy
"""


@pytest.fixture
def kernel():
    jupyter_client = pytest.importorskip("jupyter_client")
    manager = jupyter_client.KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=ROOT))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)

        def run(code: str) -> str:
            outputs = []

            def collect(message):
                if message["msg_type"] == "stream":
                    outputs.append(message["content"]["text"])

            reply = client.execute_interactive(textwrap.dedent(code), timeout=900, output_hook=collect)
            assert reply["content"]["status"] == "ok", reply["content"]
            return "".join(outputs)

        yield run
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
        for context in (client.context, manager.context):  # no zmq threads left for the interpreter's exit
            context.destroy(linger=0)


def test_widget_messages_come_from_the_kernels_thread_only(kernel, tmp_path):
    folder = tmp_path / "images"
    write_images(folder, 4)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    kernel(SPY)
    kernel(MODULE_SPY)
    first = kernel(
        """
        import explorer
        app = explorer.Explorer(device="cpu")   # the first load runs in the engine's worker...
        app.model = "resnet-18"                 # ...and this is set while it runs, in the same cell
        print(repr((app.model, app.backbone.spec, app.status, app.model_box.value)))
        """
    )
    model, shown, status, box = eval(first)  # noqa: S307 - our own repr
    assert model == "default" and shown == "default"  # the previous model, reverted through the one path
    assert "ImageNet weights" in status and "Unknown model" in status and box == "resnet-18"
    messages = kernel(
        f"""
        app.pretrained = False; app.model = "resnet18"        # loads
        app.out_indices = [1, 2]; app.image_index = 2          # captures
        app.tab = "CAM"                                        # a class-activation map
        cam = app.views["CAM"].result
        app.tab = "Dataset"
        type(app.views["Dataset"]).cache = None
        app.dataset_source = {str(folder)!r}                   # a scan
        crops = len(app.views["Dataset"].crops_box.children)
        data = {buffer.getvalue()!r}
        message = {{"event": "chunk", "id": "u1", "name": "noise.png", "size": len(data), "index": 0, "count": 1}}
        app.upload._handle_custom_msg(message, [memoryview(data)])  # as the browser sends a file
        app.controller.wait()
        app.tab = "Grid"
        print(repr((cam.stage, crops, app.image_index, len(app.images), app.status)))
        """
    )
    stage, crops, index, count, status = eval(messages)  # noqa: S307 - our own repr
    assert stage == "layer1" and crops == 4 and index == count - 1 and count > 2 and "updated in" in status
    senders, forwards = eval(kernel("app.controller.wait(); print(repr((senders, forwards)))"))  # noqa: S307
    assert len(senders) > 50 and {kind for _, kind in senders} >= {"comm_open", "comm_msg"}
    assert {thread for thread, _ in senders} == {"MainThread"}
    # model work never on the kernel's thread: in the engine's worker, or its helper for loads and forwards
    assert len(forwards) >= 4 and set(forwards) <= {"explorer-engine", "explorer-model"}
    assert "explorer-model" in forwards
    threads = eval(kernel("print(repr(module_threads))"))  # noqa: S307 - every module call, CAM's and the scan's too
    assert threads <= {"explorer-engine", "explorer-model"}, kernel("print(main_calls[0])")

    # An upload while a checkpoint loads: the kernel takes it at once (the load holds no lock it needs), and the
    # upload is shown once the new checkpoint has loaded.
    during = kernel(
        """
        import threading
        import explorer.backbones
        loading, gate, _load = threading.Event(), threading.Event(), explorer.backbones.load_backbone

        def _held_load(*args, **kwargs):
            loading.set()
            gate.wait(600)
            return _load(*args, **kwargs)

        explorer.backbones.load_backbone = _held_load
        app.state.model = "resnet34"                    # returns at once: the load starts in the engine
        """
    )
    assert during == ""
    during = kernel(
        """
        assert loading.wait(600)
        message = {"event": "chunk", "id": "u2", "name": "during-load.png", "size": len(data), "index": 0, "count": 1}
        app.upload._handle_custom_msg(message, [memoryview(data)])   # the kernel is free while the load waits
        print(repr((loading.is_set(), gate.is_set())))
        gate.set()
        app.controller.wait()
        explorer.backbones.load_backbone = _load
        print(repr((app.backbone.spec, app.image_box.label, app.status)))
        """
    )
    held, after = during.strip().splitlines()
    assert eval(held) == (True, False)  # noqa: S307 - the upload was taken while the load was held
    spec, shown, status = eval(after)  # noqa: S307
    assert spec == "resnet34" and "during-load.png" in str(shown) and "updated in" in status


def test_the_newer_views_run_models_in_the_engine_and_write_widgets_from_the_kernels_thread(kernel, tmp_path):
    """Patch views (PCA, a similarity click, attention with rollout), camera frames, a concepts fit and a
    feature visualisation: every module call in the engine's threads, every widget message from the kernel's."""
    folder = tmp_path / "images"
    write_images(folder, 6)
    kernel(SPY)
    kernel(MODULE_SPY)
    shown = kernel(
        f"""
        import io
        import numpy as np
        from PIL import Image
        import explorer

        app = explorer.Explorer("resnet18", pretrained=False, device="cpu", out_indices=[2, 3])
        app.controller.wait()
        module_threads.clear()  # from here on, only the views' own work
        app.tab = "Patches"; app.patch_mode = "pca"; app.controller.wait()
        pca = app.views["Patches"].result
        app.patch_mode = "similarity"; app.patch_query = (1, 2, 3); app.controller.wait()
        query = app.views["Patches"].result.query

        app.camera_button.value = True                            # a live camera...
        frame = io.BytesIO()
        Image.fromarray(np.full((120, 160, 3), 90, np.uint8)).save(frame, "JPEG")
        for seq in range(3):                                      # ...sends frames as the browser does
            app.camera._on_message(app.camera, {{"event": "frame", "seq": seq}}, [frame.getvalue()])
            app.controller.wait()
        camera_shown = app.image_box.label
        app.camera_button.value = False

        app.tab = "Dataset"
        type(app.views["Dataset"]).cache = None
        app.dataset_mode = "concepts"; app.concepts_n = 3
        app.dataset_source = {str(folder)!r}                       # a concepts fit, both passes
        app.controller.wait()
        concepts = app.views["Dataset"].concepts_mode._shown.concepts

        app.tab = "Grid"; app.vis_steps = 8; app.vis_size = 64
        app.channel = 1; app.vis_target = (app.stage, 1)          # Visualise
        app.controller.wait()
        picture = len(app.views["Grid"].vis.image.value)

        app.model = "vit_tiny_patch16_224"; app.out_indices = [11]; app.controller.wait()
        app.tab = "Patches"; app.patch_mode = "attention"; app.attention_rollout = True
        app.controller.wait()
        attention = app.views["Patches"].result
        print(repr((type(pca).__name__, tuple(query), camera_shown, len(concepts.basis), picture,
                    type(attention).__name__, app.status)))
        """
    )
    pca, query, camera, n_concepts, picture, attention, status = eval(shown.splitlines()[-1])  # noqa: S307
    assert pca == "PatchPCA" and query == (1, 2, 3) and camera == "camera frame"
    assert n_concepts == 3 and picture > 1000 and attention == "Attention", status
    assert "error" not in status.lower(), status
    senders, threads = eval(kernel("app.controller.wait(); print(repr((senders, module_threads)))"))  # noqa: S307
    assert len(senders) > 50 and {thread for thread, _ in senders} == {"MainThread"}
    assert threads and threads <= {"explorer-engine", "explorer-model"}, kernel("print(main_calls[0])")
