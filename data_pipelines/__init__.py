"""Data for asrth_jax: video sources, TFDS preparation, Grain pipelines, degradations.

Entry points a training loop needs (see each module for details):

* ``config.default_data_config()`` -- the ``config.data`` ConfigDict (every knob).
* ``pipeline.make_train_loader(config.data, seed=, global_batch_size=, shard_index=,
  shard_count=)`` -- iterator of per-host batches {source, source_lq, driving} NHWC.
* ``pipeline.make_eval_dataset / make_eval_loader`` -- frame 0 -> every frame of each
  test video (reconstruction protocol).
* ``state.save_iterator_state / restore_iterator_state`` and
  ``state.CheckpointSave / CheckpointRestore`` (Orbax) -- resumable data position.
* ``face_crop.face_crop_box / crop_video`` -- stable face crops (also for animate).
* ``face_mesh.default_landmarker()`` -- offline face boxes and landmarks (MediaPipe
  models shipped in ``assets/face``, run by LiteRT), for crops, teachers and AKD.
* ``errors`` -- the library's error root ``AsrthError`` and the one exit rule ``fail``
  (this package never imports ``asrth_jax``; ``asrth_jax.errors`` re-exports them).
* ``python -m data_pipelines.prepare`` and ``python -m data_pipelines.benchmark``.

Modules stay importable without TensorFlow; only the ``tfds`` kind imports it.
"""
