"""The MuJoCo backend's offscreen renderer: one GL context kept across resets, EGL else OSMesa.

Pure Python (no ROS); ``mujoco`` is imported when a renderer is first made.
"""

from __future__ import annotations

import os

_RENDERER_CLASS = None
# Geoms the visual scene holds: the loop's rooms have ~45-70 (furniture, three active objects, the
# container). ``mujoco.Renderer``'s default (10000) costs ~43 ms to allocate on every reset, against
# ~4 ms for 1000; a model with more geoms gets room for all of them (``scene_max_geom``).
MAX_SCENE_GEOMS = 1000


def scene_max_geom(model) -> int:
    """The visual scene's geom capacity for ``model``: every model geom fits, with room for decor."""
    return max(MAX_SCENE_GEOMS, 4 * int(model.ngeom))


def reusable_renderer_class():
    """``mujoco.Renderer`` that keeps its GL context when the scene's model changes.

    Every reset compiles a new model; a new ``mujoco.Renderer`` per model creates a new GL
    context, and the first ``MjrContext`` in a fresh context costs ~50 ms of driver set-up
    (measured with EGL and OSMesa here) against ~9 ms in a warm one. ``rebind`` frees the old
    model's ``MjrContext`` and scene and makes new ones in the same context (the same steps as
    ``Renderer.__init__``; mujoco is pinned, and a test compares against a fresh renderer).
    """
    global _RENDERER_CLASS
    if _RENDERER_CLASS is None:
        import mujoco

        class ReusableRenderer(mujoco.Renderer):
            def rebind(self, model) -> None:
                if self._gl_context:
                    self._gl_context.make_current()
                if self._mjr_context is not None:
                    self._mjr_context.free()
                self._model = model
                self._scene = mujoco.MjvScene(model=model, maxgeom=scene_max_geom(model))
                self._scene_option = mujoco.MjvOption()
                self._mjr_context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150.value)
                mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN.value, self._mjr_context)
                self._mjr_context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
                self._depth_rendering = False
                self._segmentation_rendering = False

        _RENDERER_CLASS = ReusableRenderer
    return _RENDERER_CLASS


def make_renderer(model, image_size: int):
    """A reusable renderer of ``image_size``² for ``model`` (on the calling thread, which then owns
    its GL context): with the ``MUJOCO_GL`` platform, else with OSMesa once."""
    try:
        return reusable_renderer_class()(model, image_size, image_size, max_geom=scene_max_geom(model))
    except Exception as first:  # EGL unavailable: fall back to OSMesa once
        try:
            from mujoco import osmesa
            from mujoco.rendering.classic import gl_context

            gl_context.GLContext = osmesa.GLContext
            return reusable_renderer_class()(model, image_size, image_size, max_geom=scene_max_geom(model))
        except Exception as second:
            raise RuntimeError(
                f"MuJoCo offscreen rendering failed with MUJOCO_GL={os.environ.get('MUJOCO_GL')!r} ({first}) "
                f"and with OSMesa ({second}); install libegl1 libegl-mesa0 libgl1-mesa-dri or libosmesa6"
            ) from second
