# session 9: stopped at step ~1320 (to free a core for detrack-small-scale) and resumed from checkpoint-1250 with
# max 3000 steps (the x0.1 drop moves to step 2400), one thread
OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m trackers.train.cli box --config run/config.yaml --output-dir run \
  --resume latest --no-progress --max-steps 3000
