"""Model files shipped inside the package, so that ``trackers`` tracks for real with no download.

Each sub-folder is one registry entry (see :mod:`trackers.zoo`) and holds:

* ``model.safetensors`` — fp32 weights as ``save_pretrained`` writes them; the file's metadata carries the trackers
  config (``trackers_config``: tracker class, architecture, settings and the registry name), the training step and
  the checkpoint it was copied from;
* ``MODEL_CARD.md`` — how the model was trained (commands, seeds, steps, data) and how well it tracks.

The folders are data, not Python packages: the registry reads them through ``importlib.resources`` from this
package (``package_file("trackers.assets", "<name>/model.safetensors")``), which works in a wheel, an editable
install and a source checkout alike. ``training/ship_small.py`` refreshes them from the newest training checkpoints.
"""
