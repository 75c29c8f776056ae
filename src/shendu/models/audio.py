r"""Speech recognition as a scikit-learn estimator: :class:`AudioClassifier` names what is
said in a short recording (a spoken digit, a command word) from the raw waveform.

The network (:class:`AudioNet`) holds its own front end, so the saved model goes from a
waveform to its answer with the code it was trained with::

    waveform (B, L) -> MelSpectrogram (log, dB) -> per-utterance normalisation
      -> [training only: mel-axis warp (VTLP), SpecAugment masks]
      -> conv blocks: Conv1d k5 -> BatchNorm1d -> ReLU -> max-pool 2, over time, with the
         mel channels as the input channels (a time-delay network, Waibel et al. 1989)
      -> global average and max over time -> dropout -> Linear n_classes

Training (``fit``) draws, every epoch and for every recording, a speed factor
(``speed_perturb``: tempo and pitch together, Ko et al. 2015) and a place in the
fixed-length window (``max_seconds``) and, for half of them, white noise at 5-30 dB SNR
(FSDD's speakers recorded in different rooms); the masks of SpecAugment (Park et al. 2019)
and the mixup pairs (Zhang et al. 2018) are drawn per batch. Those are the levers that
carry a model to voices it never heard. The optimizer is AdamW with a cosine learning-rate
schedule and label smoothing. Prediction averages the log-probabilities of each recording
played at 0.9, 1 and 1.1 times its speed (``test_speeds``).

``X`` is a list of 1-D waveforms (at ``sample_rate``) or of audio file paths (read with
:func:`shendu.audio.load`, resampled to ``sample_rate``).
"""

from __future__ import annotations

import math
import os

import numpy as np

from shendu import functional as F
from shendu import nn, optim
from shendu.autograd import no_grad
from shendu.backend import as_dtype, rng
from shendu.functional import _numba
from shendu.models._base import BaseEstimator, ClassifierMixin, seeded, training_settings
from shendu.tensor import Tensor

__all__ = ["AudioClassifier", "AudioNet"]


class AudioNet(nn.Module):
    """Log-mel front end + 1-D convolutions over time + global pooling + linear head.

    ``channels``: output channels of each conv block; ``n_mels`` mel bands from an
    ``n_fft``-point STFT with hop ``hop_length`` at ``sample_rate``; ``freq_mask`` /
    ``time_mask``: widest SpecAugment bands (0: none); ``freq_warp``: training-time warp of
    the mel axis by up to that fraction (0: none); ``front="mel"`` or ``"linear"`` (the
    plain power spectrogram in dB, for contrast); ``top_db``: the dB floor under each
    recording's peak; ``instance_norm``: the first that many conv blocks normalise each
    recording's channels over time (instance normalisation, :class:`UtteranceNorm`) before
    their batch normalisation; ``time_stretch``: training-time stretch of the time axis by
    up to that fraction (0: none).
    """

    def __init__(self, n_classes: int, sample_rate: int = 8000, n_fft: int = 256,
                 hop_length: int = 80, n_mels: int = 40, channels=(64, 96, 128),
                 kernel_size: int = 5, dropout: float = 0.2, freq_mask: int = 6,
                 time_mask: int = 10, front: str = "mel", dtype=None,
                 freq_warp: float = 0.0, active_db: float | None = None,
                 top_db: float = 80.0, instance_norm: int = 0,
                 time_stretch: float = 0.0) -> None:
        super().__init__()
        from shendu.audio.augment import FrequencyMasking, FrequencyWarp, TimeMasking, TimeStretch
        from shendu.audio.features import AmplitudeToDB, MelSpectrogram, Spectrogram, UtteranceNorm

        if front not in ("mel", "linear"):
            raise ValueError(f"AudioNet: front must be 'mel' or 'linear', got {front!r}")
        if front == "mel":
            self.features = MelSpectrogram(sample_rate, n_fft=n_fft, hop_length=hop_length,
                                           n_mels=n_mels)
            n_in = n_mels
        else:
            self.features = Spectrogram(n_fft=n_fft, hop_length=hop_length)
            n_in = n_fft // 2 + 1
        self.to_db = AmplitudeToDB("power", top_db=top_db)
        self.norm = UtteranceNorm(active_db=active_db)
        self.freq_warp = FrequencyWarp(freq_warp)
        self.time_stretch = TimeStretch(time_stretch)
        self.freq_masking = FrequencyMasking(freq_mask)
        self.time_masking = TimeMasking(time_mask)
        layers: list[nn.Module] = []
        for i, c in enumerate(channels):
            layers.append(nn.Conv1d(n_in, int(c), kernel_size, padding=kernel_size // 2,
                                    dtype=dtype))
            if i < instance_norm:
                layers.append(UtteranceNorm())
            layers += [nn.BatchNorm1d(int(c), dtype=dtype), nn.ReLU()]
            layers.append(_MaxPoolTime(2))
            n_in = int(c)
        self.body = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * n_in, n_classes, dtype=dtype)

    def features_of(self, waveform: Tensor) -> Tensor:
        """Normalised log-mel features (B, n_mels, frames) of waveforms (B, L)."""
        return self.norm(self.to_db(self.features(waveform)))

    def forward(self, waveform: Tensor) -> Tensor:
        return self.classify(self.front(waveform))

    def front(self, waveform: Tensor) -> Tensor:
        """Waveforms (B, L) -> normalised log-mel features (B, n_mels, frames), warped in
        training (no gradient unless the waveform asks for one)."""
        with no_grad() if not waveform.requires_grad else _nullcontext():
            f = self.freq_warp(self.to_db(self.features(waveform)))
            return self.norm(self.time_stretch(f))

    def classify(self, f: Tensor) -> Tensor:
        """Features (B, n_mels, frames) -> logits (B, n_classes); masked in training."""
        f = self.time_masking(self.freq_masking(f))
        h = self.body(f)                                      # (B, C, T')
        pooled = F.cat([F.mean(h, dim=-1), F.amax(h, dim=-1)], dim=1)   # (B, 2C)
        return self.head(self.dropout(pooled))


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


class _MaxPoolTime(nn.Module):
    """Max-pool (B, C, T) over time by ``k`` (a (1, k) 2-D max-pool; the last frames that
    do not fill a window are dropped, as torch's ``MaxPool1d``)."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.k = int(k)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] < self.k:
            return x
        y = F.max_pool2d(F.unsqueeze(x, 2), (1, self.k))
        return F.squeeze(y, 2)


def _colour(noise: np.ndarray, g, db: float, knots: int = 6) -> np.ndarray:
    """White ``noise`` given a random smooth spectral envelope: gains drawn from
    ``U[-db, db]`` dB at ``knots`` frequencies from 0 to Nyquist, interpolated (in dB)
    between them; rescaled to unit RMS. Hum, hiss and room tone are not white."""
    spec = np.fft.rfft(noise)
    gains = g.uniform(-db, db, knots)
    env = 10 ** (np.interp(np.linspace(0, knots - 1, len(spec)), np.arange(knots), gains) / 20)
    out = np.fft.irfft(spec * env, n=len(noise))
    return out / (np.sqrt(np.mean(out * out)) + 1e-12)


class _WeightAverage:
    """An exponential moving average of a network's weights and buffers over training
    steps (Polyak averaging; the ``decay`` grows as ``(1 + s) / (10 + s)`` up to its value
    early on, so the first steps do not weigh in). Integer buffers (counters) are not
    averaged: the network's own are kept."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        sd = model.state_dict(keep_vars=True)
        self.names = [k for k, v in sd.items() if v.data.dtype.kind == "f"]
        self.live = [sd[k] for k in self.names]
        self.avg = [v.data.astype(np.float64) for v in self.live]

    def update(self, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        for a, v in zip(self.avg, self.live):
            a *= d
            a += (1.0 - d) * v.data

    def copy_to(self, model: nn.Module) -> None:
        sd = model.state_dict(keep_vars=True)
        for k, a in zip(self.names, self.avg):
            sd[k].data = a.astype(sd[k].data.dtype)


def _is_path(x) -> bool:
    return isinstance(x, (str, os.PathLike))


class AudioClassifier(ClassifierMixin, BaseEstimator):
    """Names what is said in short recordings (e.g. spoken digits), from the waveform.

    Parameters
    ----------
    sample_rate : rate (Hz) of the waveforms; files are resampled to it (8000).
    max_seconds : length of the window each recording is placed in (zero-padded; a longer
        recording is cut to its loudest stretch) (1.0).
    n_mels, n_fft, hop_length : the log-mel front end (40 bands, 32 ms windows, 10 ms hop
        at 8 kHz).
    channels, kernel_size, dropout : the convolutional blocks and the head's dropout.
    front : ``"mel"`` or ``"linear"`` (power spectrogram without the mel filterbank).
    speed_range : training speed factors are drawn from ``[1 - r, 1 + r]`` (0: none).
    freq_warp : training warp of the mel axis (vocal-tract length perturbation, independent
        of tempo) by a factor drawn from ``[1 - r, 1 + r]`` per recording (0: none).
    active_db : normalise each recording over its active frames only (loudest band within
        ``active_db`` dB of the recording's peak), the others set to 0 (``None``: all frames).
    top_db : the log-mel floor, in dB under each recording's loudest value: quieter detail
        (breath, room tone, the noise floor of a quiet microphone) is flattened to it.
    time_stretch : training tempo perturbation of the features (pitch kept), by a factor
        drawn from ``[1 - r, 1 + r]`` per recording, on top of ``speed_range`` (0: none).
    instance_norm : the first that many conv blocks normalise each recording's channels
        over time before their batch normalisation (instance normalisation in the shallow
        layers takes out what is constant over a recording: voice, room, microphone).
    freq_mask, time_mask : widest SpecAugment bands (mel channels, frames); 0: none.
    shift : place each training recording at a random offset in the window (else centred).
    noise_snr : ``(low, high)`` dB: half the training windows get white noise at a
        signal-to-noise ratio drawn from that range (``None``: no noise).
    noise_color : that noise gets a random smooth spectral envelope of up to
        ``±noise_color`` dB (0: white).
    max_iter, batch_size, learning_rate_init, weight_decay, label_smoothing : AdamW for
        ``max_iter`` epochs (50), its step following a cosine from ``learning_rate_init``
        to 0 (``learning_rate="cosine"``, the schedule: scikit-learn's name). The older
        ``epochs=`` and a number as ``learning_rate`` still work, with a FutureWarning.
    mixup : every training batch's normalised log-mels are blended pairwise, with their
        targets, by ``lam ~ Beta(mixup, mixup)`` (Zhang et al. 2018) (0.4; 0: none).
    ema : keep an exponential moving average of the weights with this decay and end with it
        (0: the last weights).
    test_speeds : playback speeds to average the prediction over (the mean of the
        log-probabilities of the versions; ``(0.9, 1.0, 1.1)``); ``None``: as recorded.
    random_state : seed (the same seed gives the same model, bit for bit).
    dtype, verbose : float32 by default; ``verbose=1`` prints a line per epoch.

    Attributes: ``classes_``, ``model_`` (:class:`AudioNet`), ``loss_curve_``, ``n_iter_``.
    """

    def __init__(self, sample_rate: int = 8000, max_seconds: float = 1.0, n_mels: int = 40,
                 n_fft: int = 256, hop_length: int = 80, channels=(64, 96, 128),
                 kernel_size: int = 5, dropout: float = 0.2, front: str = "mel",
                 speed_range: float = 0.2, freq_warp: float = 0.0,
                 active_db: float | None = None, top_db: float = 80.0,
                 instance_norm: int = 0, time_stretch: float = 0.0, freq_mask: int = 8,
                 time_mask: int = 15,
                 shift: bool = True, noise_snr=(5.0, 30.0), noise_color: float = 0.0,
                 max_iter: int = 50,
                 batch_size: int = 64,
                 learning_rate="cosine", learning_rate_init: float = 3e-3,
                 weight_decay: float = 1e-3,
                 label_smoothing: float = 0.1, mixup: float = 0.4, ema: float = 0.0,
                 test_speeds=(0.9, 1.0, 1.1),
                 random_state: int | None = 0,
                 dtype: str = "float32", verbose: int = 0, epochs=None) -> None:
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.channels = channels
        self.kernel_size = kernel_size
        self.dropout = dropout
        self.front = front
        self.speed_range = speed_range
        self.freq_warp = freq_warp
        self.active_db = active_db
        self.top_db = top_db
        self.instance_norm = instance_norm
        self.time_stretch = time_stretch
        self.freq_mask = freq_mask
        self.time_mask = time_mask
        self.shift = shift
        self.noise_snr = noise_snr
        self.noise_color = noise_color
        self.max_iter = max_iter
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.mixup = mixup
        self.ema = ema
        self.test_speeds = test_speeds
        self.random_state = random_state
        self.dtype = dtype
        self.verbose = verbose

    # --------------------------------------------------------------- inputs
    @property
    def _length(self) -> int:
        return int(round(self.max_seconds * self.sample_rate))

    def _waveforms(self, X, where: str) -> list:
        """X as a list of finite 1-D float32 waveforms (paths are read)."""
        from shendu.audio.io import load

        name = type(self).__name__
        if type(X).__module__.startswith("scipy.sparse"):
            raise TypeError(f"{name}.{where}: sparse input is not supported; pass the "
                            f"recordings as a list of 1-D arrays or a dense 2-D array")
        if not isinstance(X, (list, tuple, np.ndarray, str, os.PathLike)) and \
                hasattr(X, "__array__"):
            X = np.asarray(X)                  # an array-like (a DataFrame, ...): its rows
        if isinstance(X, np.ndarray) and X.ndim == 2:
            if X.shape[1] == 0:
                raise ValueError(f"{name}.{where}: 0 feature(s) (shape={X.shape}) while a "
                                 f"minimum of 1 is required: a recording has at least one "
                                 f"sample")
            X = list(X)                        # each row one recording
        if _is_path(X) or (isinstance(X, np.ndarray) and X.ndim == 1 and
                           X.dtype.kind in "fiu"):
            raise ValueError(f"{name}.{where}: expected a list of waveforms or file paths, "
                             f"got a single {'path' if _is_path(X) else 'waveform'}; wrap it "
                             f"in a list (Reshape your data: X[None, :] for one recording)")
        out = []
        for i, x in enumerate(X):
            if _is_path(x):
                x, _ = load(x, self.sample_rate)
            else:
                if isinstance(x, Tensor):
                    x = x.data
                try:
                    x = np.asarray(x, dtype=np.float32)
                except (TypeError, ValueError) as e:
                    raise TypeError(f"{name}.{where}: X[{i}] is neither a waveform nor a "
                                    f"file path ({e})") from None
                if x.ndim != 1 or len(x) == 0:
                    raise ValueError(f"{name}.{where}: X[{i}] must be a non-empty 1-D "
                                     f"waveform, got shape {x.shape}")
                if not np.isfinite(x).all():
                    raise ValueError(f"{name}.{where}: X[{i}] contains NaN or infinity")
            out.append(x)
        if not out:
            raise ValueError(f"{name}.{where}: X has 0 samples; at least 1 is required")
        return out

    def _check_hyper(self) -> None:
        name = type(self).__name__
        if not 0 <= self.speed_range < 0.5:
            raise ValueError(f"{name}: speed_range must be in [0, 0.5), got "
                             f"{self.speed_range}")
        if not 0 <= self.time_stretch < 0.5:
            raise ValueError(f"{name}: time_stretch must be in [0, 0.5), got "
                             f"{self.time_stretch}")
        if not 0 <= self.freq_warp < 0.5:
            raise ValueError(f"{name}: freq_warp must be in [0, 0.5), got {self.freq_warp}")
        if not self.max_seconds > 0 or int(round(self.max_seconds * self.sample_rate)) <= \
                self.n_fft:
            raise ValueError(f"{name}: max_seconds must hold more than n_fft={self.n_fft} "
                             f"samples, got {self.max_seconds}")
        v = self.batch_size
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: batch_size must be a positive int, got {v!r}")
        ts = self.test_speeds
        if ts is not None and (not len(ts) or not all(0.5 <= float(f) <= 2.0 for f in ts)):
            raise ValueError(f"{name}: test_speeds must be None or speeds in [0.5, 2], got "
                             f"{ts!r}")
        k = self.instance_norm
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or \
                not 0 <= k <= len(self.channels):
            raise ValueError(f"{name}: instance_norm must be an int in [0, "
                             f"len(channels)={len(self.channels)}], got {k!r}")
        if not self.top_db > 0:
            raise ValueError(f"{name}: top_db must be > 0, got {self.top_db}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"{name}: ema must be in [0, 1), got {self.ema}")
        if not self.mixup >= 0:
            raise ValueError(f"{name}: mixup must be >= 0, got {self.mixup}")

    def _batch(self, waves: list, train: bool) -> np.ndarray:
        """(B, L) window of each waveform (perturbed and shifted when training)."""
        from shendu.audio.augment import fit_length, speed_perturb

        L = self._length
        out = np.zeros((len(waves), L), dtype=as_dtype(self.dtype))
        kern = _numba.kernels_for(out)
        g = rng()
        for i, x in enumerate(waves):
            off = None
            if train:
                if self.speed_range:
                    x = speed_perturb(x, 1.0 + self.speed_range * (2 * g.random() - 1))
                if self.shift and len(x) < L:
                    off = int(g.integers(0, L - len(x) + 1))
            fit_length(x, L, off, out=out[i])
            if train and self.noise_snr is not None and g.random() < 0.5:
                lo, hi = self.noise_snr
                rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) + 1e-8
                sd = rms * 10 ** (-(lo + (hi - lo) * g.random()) / 20)
                noise = g.standard_normal(L)
                if self.noise_color:
                    noise = _colour(noise, g, self.noise_color)
                if kern is not None and noise.dtype == np.float64:
                    kern.add_scaled(out[i], noise, sd)      # the passes below, in one
                else:
                    out[i] += (sd * noise).astype(out.dtype)
        return out

    # ------------------------------------------------------------- training
    def fit(self, X, y) -> AudioClassifier:
        """Train a fresh network on waveforms or paths ``X`` and labels ``y``."""
        self._check_hyper()
        cfg = training_settings(self, ("cosine",))
        waves = self._waveforms(X, "fit")
        t = self._encode_y(y, np.empty(len(waves)), "fit")
        with seeded(self.random_state):
            self.model_ = AudioNet(len(self.classes_), self.sample_rate, self.n_fft,
                                   self.hop_length, self.n_mels, tuple(self.channels),
                                   self.kernel_size, self.dropout, self.freq_mask,
                                   self.time_mask, self.front, as_dtype(self.dtype),
                                   float(self.freq_warp), self.active_db,
                                   float(self.top_db), int(self.instance_norm),
                                   float(self.time_stretch))
            params = list(self.model_.parameters())
            self.optimizer_ = optim.AdamW(params, lr=cfg["learning_rate_init"],
                                          weight_decay=self.weight_decay)
            self._train(waves, t, cfg["max_iter"], cfg["learning_rate_init"])
        return self

    def _train(self, waves: list, t: np.ndarray, epochs: int, lr0: float) -> None:
        g = rng()
        n, bs = len(waves), min(int(self.batch_size), len(waves))
        steps_per_epoch = math.ceil(n / bs)
        total = max(steps_per_epoch * epochs, 1)
        self.loss_curve_ = []
        step = 0
        self.model_.train()
        avg = _WeightAverage(self.model_, float(self.ema)) if self.ema else None
        for epoch in range(epochs):
            order = g.permutation(n)
            running = 0.0
            for s in range(0, n, bs):
                idx = order[s:s + bs]
                xb = self._batch([waves[i] for i in idx], train=True)
                lr = 0.5 * lr0 * (1 + math.cos(math.pi * step / total))
                for group in self.optimizer_.param_groups:
                    group["lr"] = lr
                self.optimizer_.zero_grad()
                target = t[idx]
                if self.mixup:
                    f, target = self._mix(self.model_.front(Tensor(xb)), target, g)
                    z = self.model_.classify(f)
                else:
                    z = self.model_(Tensor(xb))
                loss = F.cross_entropy(z, target, label_smoothing=self.label_smoothing)
                loss.backward()
                self.optimizer_.step()
                if avg is not None:
                    avg.update(step)
                running += float(loss.data) * len(idx)
                step += 1
            self.loss_curve_.append(running / n)
            if self.verbose:
                print(f"{type(self).__name__}: epoch {epoch + 1}/{epochs} "
                      f"loss {running / n:.4f}", flush=True)
        if avg is not None:
            avg.copy_to(self.model_)
        self.n_iter_ = epochs
        self.model_.eval()

    def _mix(self, f: Tensor, target: np.ndarray, g) -> tuple:
        """Mixup (Zhang et al. 2018) of a batch of features: each item blended with a
        random other one by ``lam ~ Beta(mixup, mixup)`` (the larger share kept for the
        item itself), and the one-hot targets blended alike."""
        n, k = len(target), len(self.classes_)
        lam = g.beta(self.mixup, self.mixup, n)
        lam = np.maximum(lam, 1 - lam).astype(f.data.dtype)
        perm = g.permutation(n)
        mixed = f.data * lam[:, None, None] + f.data[perm] * (1 - lam)[:, None, None]
        eye = np.eye(k, dtype=f.data.dtype)
        soft = eye[target] * lam[:, None] + eye[target[perm]] * (1 - lam)[:, None]
        return Tensor(mixed), soft

    # ------------------------------------------------------------ prediction
    def _is_fitted(self) -> bool:
        # no n_features_in_: a recording's length is not a number of features (any length
        # is valid input), so scikit-learn's feature-count checks do not apply
        return hasattr(self, "model_") and hasattr(self, "classes_")

    def _logits(self, waves: list) -> np.ndarray:
        """Logits of each recording; with ``test_speeds``, the mean over those playback
        speeds of the log-probabilities."""
        from shendu.audio.augment import speed_perturb

        self.model_.eval()
        speeds = tuple(getattr(self, "test_speeds", None) or ())
        outs = []
        with no_grad():
            for s in range(0, len(waves), 256):
                chunk = waves[s:s + 256]
                if not speeds:
                    xb = self._batch(chunk, train=False)
                    outs.append(self.model_(Tensor(xb)).data.astype(np.float64))
                    continue
                acc = 0.0
                for f in speeds:
                    xb = self._batch([speed_perturb(x, f) if f != 1 else x for x in chunk],
                                     train=False)
                    z = self.model_(Tensor(xb)).data.astype(np.float64)
                    z = z - z.max(axis=1, keepdims=True)
                    acc = acc + (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))
                outs.append(acc / len(speeds))
        return np.concatenate(outs)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in ``classes_`` order."""
        self._check_fitted("predict_proba")
        z = self._logits(self._waveforms(X, "predict_proba"))
        z = z - z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each recording."""
        self._check_fitted("predict")
        z = self._logits(self._waveforms(X, "predict"))
        return self.classes_[np.argmax(z, axis=1)]
