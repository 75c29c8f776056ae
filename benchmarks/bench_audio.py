"""The ``audio`` workload: AudioClassifier's network (shendu.models.audio.AudioNet) against
the same network in PyTorch — train steps/s of each in one run (interleaved), their ratio,
and the peak memory of each (alone in a fresh process).

Workload: a batch of 64 one-second waveforms at 8 kHz -> power STFT (n_fft 256, hop 80,
periodic Hann, reflection padding) -> 40-band HTK mel filterbank -> dB (top_db 80, per
utterance) -> per-utterance mean/variance normalisation -> three blocks Conv1d k5 (64, 96,
128 channels) + BatchNorm1d + ReLU + max-pool 2 -> mean and max over time -> Linear 10.
Float32, SGD (lr 0.01, momentum 0.9), cross-entropy; SpecAugment masks and dropout off
(random draws differ between the libraries). Both libraries compute the features without
gradient (the waveform needs none), as in training.

    python benchmarks/bench_audio.py [--steps 20] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import _harness as H  # noqa: E402

BATCH, LENGTH, SR = 64, 8000, 8000
N_FFT, HOP, N_MELS, CHANNELS = 256, 80, 40, (64, 96, 128)


def build_shendu():
    from shendu.models.audio import AudioNet

    return AudioNet(10, SR, N_FFT, HOP, N_MELS, CHANNELS, 5, dropout=0.0, freq_mask=0,
                    time_mask=0)


def build_torch():
    import torch
    from torch import nn

    from shendu.audio.features import mel_filterbank

    class TorchAudioNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("window", torch.hann_window(N_FFT))
            fb = mel_filterbank(SR, N_FFT, N_MELS).astype(np.float32)
            self.register_buffer("fb", torch.from_numpy(fb))
            layers, c_in = [], N_MELS
            for c in CHANNELS:
                layers += [nn.Conv1d(c_in, c, 5, padding=2), nn.BatchNorm1d(c), nn.ReLU(),
                           nn.MaxPool1d(2)]
                c_in = c
            self.body = nn.Sequential(*layers)
            self.head = nn.Linear(2 * c_in, 10)

        def forward(self, x):
            with torch.no_grad():
                s = torch.stft(x, N_FFT, HOP, window=self.window, center=True,
                               pad_mode="reflect", return_complex=True).abs() ** 2
                db = 10 * torch.log10(torch.clamp(self.fb @ s, min=1e-10))
                db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - 80.0)
                db = db - db.mean(-1, keepdim=True)
                f = db / torch.sqrt((db * db).mean(-1, keepdim=True) + 1e-5)
            h = self.body(f)
            return self.head(torch.cat([h.mean(-1), h.amax(-1)], 1))

    return TorchAudioNet()


def make_data(seed: int = 0, n_batches: int = 4):
    """Speech-like batches: noise bursts of random length and place, at random gain."""
    rng = np.random.default_rng(seed)
    xs = []
    for _ in range(n_batches):
        x = np.zeros((BATCH, LENGTH), np.float32)
        for i in range(BATCH):
            n = int(rng.integers(2000, 6000))
            s = int(rng.integers(0, LENGTH - n))
            x[i, s:s + n] = 0.1 * rng.standard_normal(n) * np.hanning(n)
        xs.append(x)
    ys = [rng.integers(0, 10, BATCH) for _ in range(n_batches)]
    return xs, ys


def step_fn(lib: str, xs, ys):
    return H.train_step_fn(lib, lambda nn: build_shendu() if lib == "shendu" else build_torch(),
                           xs, ys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--memory-probe", choices=["shendu", "torch"], help=argparse.SUPPRESS)
    ap.add_argument("--workload", default="audio", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print the result as JSON too")
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args()
    H.set_threads(args.threads)
    xs, ys = make_data()
    if args.memory_probe:
        step = step_fn(args.memory_probe, xs, ys)
        step()
        base = H.rss_mb()
        for _ in range(args.steps):
            step()
        print(json.dumps({"peak_mb": max(0.0, H.peak_rss_mb() - base)}))
        return
    print(H.threads_note())
    torch_step = None if args.no_torch else step_fn("torch", xs, ys)
    res = H.compare("audio", step_fn("shendu", xs, ys), torch_step, args.steps, args.repeats)
    for lib in ("shendu", "torch")[:1 if args.no_torch else 2]:
        res[f"{lib}_peak_mb"] = H.memory_in_subprocess(__file__, lib, "audio", 10)
    H.print_result(res)
    if args.json:
        print(json.dumps(res))


if __name__ == "__main__":
    main()
