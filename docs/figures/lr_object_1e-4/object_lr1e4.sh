#!/bin/bash
# On/off: object GRPO from the same 1-demo SFT checkpoint as runs/bench13/object (README bench), lr 1e-4 instead of 2e-4.
cd /work/main
git rev-parse HEAD > runs/bench16/object_lr1e4.commit
date
.venv/bin/svrl train --config /work/main/svrl_trainer/configs/tiny.yaml --resume --set init_checkpoint=runs/bench13/object/sft_1demo --set out_dir=runs/bench16/object_lr1e4/grpo --set 'env.tasks=[object]' --set env.image_size=96 --set total_steps=10000 --set time_budget_minutes=30.0 --set eval.every=5 --set eval.episodes_per_task=10 --set checkpoint.every=5 --set rollout.runtime=onnx --set optim.lr=1e-4
last=$(ls -d runs/bench16/object_lr1e4/grpo/checkpoints/step_* | sort | tail -1)
.venv/bin/svrl eval --ckpt $last/policy --tasks object --image-size 96 --episodes-per-task 50 --out runs/bench16/object_lr1e4/eval/grpo
echo "rc=$?"; date
