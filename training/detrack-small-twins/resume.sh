OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m trackers.train.cli box --config run/config.yaml --output-dir run --resume latest --no-progress
