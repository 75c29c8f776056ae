"""Speech: reading audio files (every bad-file case), the feature layers against librosa
and torch, their gradients, SpecAugment, the FSDD reader, AudioClassifier (learning,
determinism, save/load, predicting from WAV paths) and the CLI."""

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import shendu

sf = pytest.importorskip("soundfile")
librosa = pytest.importorskip("librosa")

from conftest import data_dir  # noqa: E402

from shendu.audio import (  # noqa: E402
    MFCC,
    AmplitudeToDB,
    AudioFileError,
    FrequencyMasking,
    FrequencyWarp,
    MelSpectrogram,
    Spectrogram,
    TimeMasking,
    TimeStretch,
    UtteranceNorm,
    fit_length,
    load,
    speed_perturb,
)
from shendu.audio.augment import stretch_matrix  # noqa: E402

SR = 8000


def fsdd_root():
    d = data_dir()
    if d is None or not (d / "fsdd").is_dir():
        pytest.skip("the shared FSDD recordings (../shared/data/fsdd or $SHENDU_DATA) are absent")
    return d / "fsdd"


def tone(freq=440.0, seconds=0.5, sr=SR, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def speech_like(seed=0, n=4000):
    """A real recording when the data is there, else noise shaped like one."""
    d = data_dir()
    if d is not None and (d / "fsdd" / "3_jackson_7.wav").exists():
        return load(d / "fsdd" / "3_jackson_7.wav")[0].astype(np.float64)
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n) * np.hanning(n) * 0.3


# ------------------------------------------------------------------------- reading
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT",
                                     "DOUBLE"])
def test_load_reads_every_common_wav_kind(tmp_path, subtype):
    x = tone(500.0, 0.3)
    p = tmp_path / f"{subtype}.wav"
    sf.write(p, x, SR, subtype=subtype)
    y, sr = load(p)
    assert sr == SR and y.dtype == np.float32 and y.shape == x.shape
    tol = {"PCM_U8": 1e-2, "PCM_16": 1e-4}.get(subtype, 1e-6)
    assert np.abs(y - x).max() < tol


def test_load_mixes_stereo_to_mono_and_resamples(tmp_path):
    left, right = tone(400.0, 0.5, 16000), tone(400.0, 0.5, 16000, amp=0.1)
    p = tmp_path / "stereo16k.wav"
    sf.write(p, np.stack([left, right], 1), 16000, subtype="PCM_16")
    y, sr = load(p, sample_rate=SR)
    assert sr == SR and y.ndim == 1 and len(y) == 4000
    # the mix of the two channels, still a 400 Hz tone after resampling
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * SR / len(y) - 400.0) <= 2.0
    assert abs(np.abs(y[500:-500]).max() - 0.3) < 0.01


def _bad_files(tmp_path):
    """The bad files of the issue, made here: empty, 10 ms, corrupt header, not audio,
    one hour long (written in blocks: bounded memory)."""
    files = {}
    files["empty"] = tmp_path / "empty.wav"
    files["empty"].write_bytes(b"")
    files["10ms"] = tmp_path / "short.wav"
    sf.write(files["10ms"], tone(seconds=0.01), SR, subtype="PCM_16")
    good = tmp_path / "tmp_good.wav"
    sf.write(good, tone(seconds=0.3), SR, subtype="PCM_16")
    raw = bytearray(good.read_bytes())
    raw[8:16] = b"XXXXJUNK"                   # the WAVE/fmt tags destroyed
    files["corrupt"] = tmp_path / "corrupt.wav"
    files["corrupt"].write_bytes(bytes(raw))
    good.unlink()
    files["text"] = tmp_path / "notes.wav"
    files["text"].write_text("this is not audio, only text pretending to be a wav\n" * 20)
    files["hour"] = tmp_path / "hour.wav"
    block = np.zeros(SR * 60, dtype=np.int16)
    with sf.SoundFile(files["hour"], "w", SR, 1, subtype="PCM_16") as f:
        for _ in range(60):
            f.write(block)
    return files


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return _bad_files(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case,words", [
    ("empty", "empty"), ("10ms", "too short"), ("corrupt", "not a readable audio file"),
    ("text", "not a readable audio file"), ("hour", "too long")])
def test_bad_files_give_one_clear_error_naming_the_file(bad_files, case, words):
    p = bad_files[case]
    with pytest.raises(AudioFileError) as e:
        load(p)
    msg = str(e.value)
    assert str(p) in msg and words in msg and "\n" not in msg


def test_missing_file_is_an_audio_error(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        load(tmp_path / "nope.wav")


def test_long_file_memory_is_bounded(bad_files):
    tracemalloc.start()
    try:
        with pytest.raises(AudioFileError):
            load(bad_files["hour"])
        x, _ = load(bad_files["hour"], max_seconds=2.0, on_long="truncate")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(x) == 2 * SR
    assert peak < 4 * 2**20          # the file holds 57 MB of samples


# ------------------------------------------------------------------------ features
MEL = dict(n_fft=256, hop_length=80, n_mels=40)


@pytest.mark.parametrize("sr,n_fft,n_mels", [(8000, 256, 40), (16000, 400, 128),
                                             (22050, 2048, 64), (8000, 200, 20)])
@pytest.mark.parametrize("mel_scale,norm", [("htk", None), ("slaney", "slaney"),
                                            ("slaney", None), ("htk", "slaney")])
def test_mel_filterbank_equals_librosa(sr, n_fft, n_mels, mel_scale, norm):
    """The filterbank is librosa's, computed by the same formulas: equal bit for bit (and
    building a MelSpectrogram does not import librosa)."""
    from shendu.audio.features import mel_filterbank

    for fmin, fmax in ((0.0, None), (60.0, sr / 3)):
        ours = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, norm, mel_scale)
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax,
                                  htk=mel_scale == "htk", norm=norm, dtype=np.float64)
        assert ours.dtype == np.float64 and ours.shape == ref.shape
        assert np.array_equal(ours, ref)


def test_mel_filterbank_warns_of_empty_filters():
    from shendu.audio.features import mel_filterbank

    with pytest.warns(UserWarning, match="empty filters"):
        mel_filterbank(8000, 64, 80)


def test_melspectrogram_without_gradient_equals_with():
    """Without a gradient the power spectrum is squared in place: the same numbers."""
    x = np.random.default_rng(0).standard_normal((3, 2000)).astype(np.float32)
    m = MelSpectrogram(SR, **MEL)
    with shendu.no_grad():
        a = m(shendu.from_numpy(x)).data
    b = m(shendu.tensor(x, requires_grad=True)).data
    assert np.array_equal(a, b)


@pytest.mark.slow
def test_melspectrogram_matches_librosa():
    x = speech_like()
    ours = MelSpectrogram(SR, **MEL)(shendu.from_numpy(x[None].copy())).data[0]
    ref = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=256, hop_length=80, n_mels=40,
                                         htk=True, norm=None, pad_mode="reflect",
                                         center=True, power=2.0, dtype=np.float64)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.max())


def test_melspectrogram_slaney_and_magnitude_match_librosa():
    x = speech_like()
    m = MelSpectrogram(SR, n_fft=200, win_length=160, hop_length=50, n_mels=32, f_min=50.0,
                       f_max=3800.0, power=1.0, norm="slaney", mel_scale="slaney")
    ours = m(shendu.from_numpy(x.copy())).data
    ref = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=200, win_length=160,
                                         hop_length=50, n_mels=32, fmin=50.0, fmax=3800.0,
                                         power=1.0, htk=False, norm="slaney",
                                         pad_mode="reflect", dtype=np.float64)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12 * ref.max())


def test_mfcc_matches_librosa():
    x = speech_like()
    ours = MFCC(SR, n_mfcc=20, melkwargs=MEL)(shendu.from_numpy(x.copy())).data
    S = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=256, hop_length=80, n_mels=40,
                                       htk=True, norm=None, pad_mode="reflect",
                                       dtype=np.float64)
    ref = librosa.feature.mfcc(S=librosa.power_to_db(S, top_db=80.0), n_mfcc=20)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-7)


def test_amplitude_to_db_top_db_is_per_utterance():
    x = speech_like()
    batch = np.stack([x, 1e-3 * x])          # the second utterance 60 dB quieter
    m = MelSpectrogram(SR, **MEL)(shendu.from_numpy(batch))
    db = AmplitudeToDB(top_db=80.0)(m).data
    for i in range(2):
        ref = librosa.power_to_db(m.data[i], top_db=80.0)
        np.testing.assert_allclose(db[i], ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("float64", 1e-10)])
def test_spectrogram_values_and_gradients_match_torch(dtype, tol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 900)).astype(dtype)
    g = rng.standard_normal((3, 129, 1 + 900 // 80)).astype(dtype)
    xs = shendu.from_numpy(x.copy())
    xs.requires_grad = True
    out = Spectrogram(n_fft=256, win_length=200, hop_length=80)(xs)
    out.backward(shendu.from_numpy(g))
    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    win = torch.hann_window(200, dtype=xt.dtype)
    st = torch.stft(xt, 256, hop_length=80, win_length=200, window=win, center=True,
                    pad_mode="reflect", return_complex=True).abs() ** 2
    st.backward(torch.from_numpy(g))
    scale = np.abs(st.detach().numpy()).max()
    np.testing.assert_allclose(out.data, st.detach().numpy(), rtol=tol, atol=tol * scale)
    gs = np.abs(xt.grad.numpy()).max()
    np.testing.assert_allclose(xs.grad.data, xt.grad.numpy(), rtol=tol, atol=tol * gs)


def _x64(shape, seed=0):
    t = shendu.from_numpy(np.random.default_rng(seed).standard_normal(shape))
    t.requires_grad = True
    return t


@pytest.mark.parametrize("n_fft,win,hop,power,center", [
    (16, 12, 5, 2.0, True), (16, 16, 4, 1.0, True), (15, 15, 4, 2.0, True),
    (16, 10, 3, 1.5, False)])
def test_spectrogram_gradcheck(n_fft, win, hop, power, center):
    s = Spectrogram(n_fft=n_fft, win_length=win, hop_length=hop, power=power, center=center)
    assert shendu.gradcheck(lambda a: s(a), [_x64((2, 50))])


def test_feature_chain_gradcheck():
    mf = MFCC(SR, n_mfcc=6, melkwargs=dict(n_fft=32, hop_length=8, n_mels=10))
    norm = UtteranceNorm()
    assert shendu.gradcheck(lambda a: norm(mf(a)), [_x64((2, 60), 3)])


def test_gradcheck_catches_a_wrong_backward(monkeypatch):
    """The gradcheck above can fail: a backward off by a factor is caught."""
    from shendu.audio import features

    real = features.PowerSTFT.backward
    monkeypatch.setattr(features.PowerSTFT, "backward", lambda self, g: 1.01 * real(self, g))
    s = Spectrogram(n_fft=16, hop_length=4)
    with pytest.raises(AssertionError):
        shendu.gradcheck(lambda a: s(a), [_x64((1, 40))])


def test_feature_errors_name_the_layer():
    with pytest.raises(ValueError, match="MelSpectrogram.*f_min"):
        MelSpectrogram(SR, f_max=5000.0)
    with pytest.raises(ValueError, match="Spectrogram.*win_length"):
        Spectrogram(n_fft=64, win_length=128)
    with pytest.raises(ValueError, match="longer than 128 samples, got 100"):
        Spectrogram(n_fft=256)(shendu.from_numpy(np.zeros((1, 100))))
    with pytest.raises(ValueError, match="MFCC: n_mfcc"):
        MFCC(SR, n_mfcc=50, melkwargs=MEL)


# ------------------------------------------------------------------- augmentation
def test_masks_only_in_training_and_bounded():
    x = shendu.from_numpy(np.ones((8, 40, 100), np.float32))
    fm, tm = FrequencyMasking(10), TimeMasking(20)
    fm.eval()
    tm.eval()
    assert fm(x) is x and tm(x) is x
    fm.train()
    tm.train()
    shendu.manual_seed(5)
    a = fm(x).data
    widths = (a[:, :, 0] == 0).sum(1)
    assert widths.max() < 10 and widths.sum() > 0
    assert ((a == 0).all(axis=2) | (a == 1).all(axis=2)).all()   # whole channels
    b = tm(x).data
    tw = (b[:, 0, :] == 0).sum(1)
    assert tw.max() < 20 and tw.sum() > 0
    shendu.manual_seed(5)
    np.testing.assert_array_equal(fm(x).data, a)               # same seed, same masks


def test_frequency_warp_moves_content_along_the_axis():
    w = FrequencyWarp(0.2)
    x = np.zeros((3, 40, 5))
    x[:, 10, :] = 1.0                                          # one band lit at channel 10
    xt = shendu.from_numpy(x)
    w.eval()
    assert w(xt) is xt
    w.train()
    shendu.manual_seed(1)
    y = w(xt).data
    centre = (y * np.arange(40)[:, None]).sum(1) / y.sum(1)   # (3, 5): centre of mass
    alpha = centre[:, 0] / 10.0
    assert np.all(np.abs(alpha - 1) <= 0.2) and np.ptp(alpha) > 0.01   # drawn per utterance
    np.testing.assert_allclose(centre, centre[:, :1].repeat(5, 1))     # same for every frame
    shendu.manual_seed(1)
    np.testing.assert_array_equal(w(xt).data, y)               # same seed, same warp

    def warped(a):                                             # the same warp at every call
        shendu.manual_seed(2)
        return w(a)
    assert shendu.gradcheck(warped, [_x64((2, 7, 4))])
    with pytest.raises(ValueError, match="FrequencyWarp: max_warp"):
        FrequencyWarp(0.7)


def test_time_stretch_resamples_time_about_the_centre():
    x = np.random.default_rng(0).standard_normal((3, 4, 21))
    xt = shendu.from_numpy(x)
    s = TimeStretch(0.2)
    s.eval()
    assert s(xt) is xt
    s.train()
    shendu.manual_seed(1)
    y = s(xt).data
    shendu.manual_seed(1)                                          # the factors it drew
    alpha = 1.0 + 0.2 * (2.0 * shendu.backend.rng().random((3,)) - 1.0)
    assert np.ptp(alpha) > 0.01                                    # one factor per utterance
    t = np.arange(21)
    for i in range(3):                                             # each row: np.interp at
        src = np.clip(10 + (t - 10) / alpha[i], 0, 20)             # c + (t - c) / alpha
        for c in range(4):
            np.testing.assert_allclose(y[i, c], np.interp(src, t, x[i, c]), rtol=1e-12)
    np.testing.assert_allclose(y[:, :, 10], x[:, :, 10])           # the centre stays put
    shendu.manual_seed(1)
    np.testing.assert_array_equal(s(xt).data, y)                  # same seed, same stretch

    def stretched(a):                                              # the same draw each call
        shendu.manual_seed(2)
        return s(a)
    assert shendu.gradcheck(stretched, [_x64((2, 3, 9))])
    torch = pytest.importorskip("torch")
    shendu.manual_seed(2)
    alpha = 1.0 + 0.2 * (2.0 * shendu.backend.rng().random((2,)) - 1.0)
    m = stretch_matrix(9, alpha)
    a = _x64((2, 3, 9), 4)
    g = np.random.default_rng(5).standard_normal((2, 3, 9))
    ours = stretched(a)
    ours.backward(shendu.from_numpy(g))
    ta = torch.tensor(a.data, requires_grad=True)
    want = ta @ torch.from_numpy(m)
    want.backward(torch.from_numpy(g))
    np.testing.assert_allclose(ours.data, want.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(a.grad.data, ta.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="TimeStretch: max_stretch"):
        TimeStretch(0.5)


def test_utterance_norm_over_active_frames_ignores_padding():
    """A recording placed in a short or a long window of silence gets the same features on
    its own frames (and 0 elsewhere); without ``active_db`` the padding changes them."""
    rng = np.random.default_rng(0)
    word = rng.normal(-30.0, 6.0, (12, 9))
    short, long = np.full((1, 12, 15), -90.0), np.full((1, 12, 40), -90.0)
    short[0, :, 3:12] = word
    long[0, :, 20:29] = word
    act = UtteranceNorm(active_db=50.0)
    a, b = act(shendu.from_numpy(short)).data, act(shendu.from_numpy(long)).data
    np.testing.assert_allclose(a[0, :, 3:12], b[0, :, 20:29], rtol=1e-12, atol=1e-12)
    assert not a[0, :, :3].any() and not b[0, :, 29:].any()
    np.testing.assert_allclose(a[0, :, 3:12].mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(a[0, :, 3:12].std(1), 1, atol=1e-5)
    plain = UtteranceNorm()
    assert not np.allclose(plain(shendu.from_numpy(short)).data[0, :, 3:12],
                           plain(shendu.from_numpy(long)).data[0, :, 20:29], atol=1e-3)
    x = _x64((2, 5, 8), 4)
    x.data[:, :, :3] -= 100.0                                  # three inactive frames
    assert shendu.gradcheck(lambda t: act(t), [x])


def test_speed_perturb_and_fit_length():
    x = tone(400.0, 0.5)
    y = speed_perturb(x, 1.25)
    assert len(y) == 3200
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * SR / len(y) - 500.0) <= 3.0
    buf = fit_length(np.ones(10, np.float32), 16)
    assert buf[:3].sum() == 0 and buf[3:13].sum() == 10 and buf[13:].sum() == 0
    long = np.zeros(100, np.float32)
    long[60:70] = 1.0
    cut = fit_length(long, 20)
    assert cut.sum() == 10                    # the loudest stretch is kept


# ---------------------------------------------------------------------------- FSDD
@pytest.mark.slow
def test_fsdd_split_and_speakers():
    from shendu.data.datasets import fsdd, fsdd_recordings, leave_one_speaker_out

    root = fsdd_root()
    s = fsdd(root)
    assert len(s.X_train) == 2250 and len(s.X_test) == 250
    assert sorted(set(s.speakers_test)) == ["george", "jackson", "lucas", "nicolas",
                                            "yweweler"]
    assert np.bincount(s.y_test).tolist() == [25] * 10
    assert all(x.dtype == np.float32 and x.ndim == 1 for x in s.X_test[:5])
    rec = fsdd_recordings(root)
    assert set(rec.takes[np.isin(rec.paths, [])].tolist()) == set()
    folds = list(leave_one_speaker_out(rec.speakers))
    assert [f[0] for f in folds] == ["george", "jackson", "lucas", "nicolas", "yweweler"]
    for spk, tr, te in folds:
        assert len(te) == 500 and len(tr) == 2000
        assert set(rec.speakers[te]) == {spk} and spk not in set(rec.speakers[tr])
    one = fsdd(root, test_speaker="lucas")
    assert len(one.X_test) == 500 and set(one.speakers_test) == {"lucas"}


def test_fsdd_absent_root_says_where_to_get_it(tmp_path):
    from shendu.data.datasets import fsdd

    with pytest.raises(FileNotFoundError, match="free-spoken-digit-dataset"):
        fsdd(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no files named"):
        fsdd(tmp_path)


# --------------------------------------------------------------------------- model
def _subset(n_per_digit_train=12, takes_test=range(5)):
    """A small FSDD subset: every speaker, a few training takes per digit."""
    from shendu.data.datasets import fsdd_recordings

    rec = fsdd_recordings(fsdd_root())
    tr = np.flatnonzero((rec.takes >= 5) & (rec.takes < 5 + n_per_digit_train))
    te = np.flatnonzero(np.isin(rec.takes, list(takes_test)))
    w = rec.waveforms
    return [w[i] for i in tr], [w[i] for i in te], rec.labels[tr], rec.labels[te], rec, te


@pytest.mark.slow
def test_audio_classifier_learns_spoken_digits():
    from shendu.models import AudioClassifier

    Xtr, Xte, ytr, yte, _, _ = _subset(12)
    # a small budget: light augmentation (the defaults' heavier one needs more epochs)
    m = AudioClassifier(max_iter=10, channels=(32, 48, 64), speed_range=0.1, noise_snr=None,
                        freq_mask=4, time_mask=8, mixup=0.0, random_state=0).fit(Xtr, ytr)
    acc = m.score(Xte, yte)
    assert m.loss_curve_[-1] < m.loss_curve_[0]
    assert acc >= 0.70, acc        # chance is 0.10; this budget reaches about 0.79


@pytest.mark.slow
def test_audio_classifier_same_seed_same_model():
    from shendu.models import AudioClassifier

    Xtr, Xte, ytr, _, _, _ = _subset(2)
    kw = dict(max_iter=1, channels=(8, 8), random_state=3)
    a = AudioClassifier(**kw).fit(Xtr, ytr).predict_proba(Xte[:20])
    b = AudioClassifier(**kw).fit(Xtr, ytr).predict_proba(Xte[:20])
    np.testing.assert_array_equal(a, b)
    c = AudioClassifier(**{**kw, "random_state": 4}).fit(Xtr, ytr).predict_proba(Xte[:20])
    assert not np.array_equal(a, c)


@pytest.mark.slow
def test_audio_classifier_old_names_warn_and_mean_the_same():
    """``epochs=`` and a number as ``learning_rate`` are the deprecated names of
    ``max_iter`` and ``learning_rate_init`` (the names of every ready model)."""
    from shendu.models import AudioClassifier

    Xtr, Xte, ytr, _, _, _ = _subset(2)
    kw = dict(channels=(8,), random_state=3)
    new = AudioClassifier(max_iter=1, learning_rate_init=1e-2, **kw).fit(Xtr, ytr)
    with pytest.warns(FutureWarning, match="epochs=.... is deprecated; use max_iter="):
        with pytest.warns(FutureWarning, match="learning_rate_init="):
            old = AudioClassifier(epochs=1, learning_rate=1e-2, **kw).fit(Xtr, ytr)
    assert old.n_iter_ == new.n_iter_ == 1
    np.testing.assert_array_equal(old.predict_proba(Xte[:8]), new.predict_proba(Xte[:8]))
    with pytest.raises(ValueError, match="learning_rate .the schedule. must be one of 'cosine'"):
        AudioClassifier(learning_rate="adaptive", **kw).fit(Xtr, ytr)


@pytest.mark.slow
def test_audio_classifier_test_speeds_average_log_probabilities():
    from shendu.audio import speed_perturb
    from shendu.models import AudioClassifier

    Xtr, Xte, ytr, _, _, _ = _subset(2)
    m = AudioClassifier(max_iter=1, channels=(8, 8), random_state=3).fit(Xtr, ytr)
    assert m.test_speeds == (0.9, 1.0, 1.1)                    # the default
    X = Xte[:12]
    default = m.predict_proba(X)
    m.set_params(test_speeds=None)
    plain = m.predict_proba(X)
    m.set_params(test_speeds=(1.0,))
    np.testing.assert_allclose(m.predict_proba(X), plain, rtol=1e-12, atol=1e-15)
    m.set_params(test_speeds=(0.9, 1.0, 1.1))
    p = m.predict_proba(X)
    np.testing.assert_array_equal(p, default)
    m.set_params(test_speeds=None)
    logs = [np.log(m.predict_proba([speed_perturb(x, f) for x in X])) for f in (0.9, 1, 1.1)]
    want = np.exp(np.mean(logs, axis=0))
    np.testing.assert_allclose(p, want / want.sum(1, keepdims=True), rtol=1e-10)
    assert not np.allclose(p, plain)
    with pytest.raises(ValueError, match="test_speeds"):
        m.set_params(test_speeds=(3.0,)).fit(Xtr[:4], ytr[:4])


def test_weight_average_is_an_exponential_moving_average():
    from shendu.models.audio import _WeightAverage

    net = shendu.nn.Sequential(shendu.nn.Linear(3, 2), shendu.nn.BatchNorm1d(2))
    avg = _WeightAverage(net, 0.9)
    w = net[0].weight
    want = w.data.astype(np.float64)
    rng = np.random.default_rng(0)
    for s in range(30):
        w.data = rng.standard_normal(w.shape).astype(w.data.dtype)   # a fresh array each step
        net[1].running_mean.data[...] += 1.0                          # updated in place
        net[1].num_batches_tracked.data = np.asarray(s + 1)
        d = min(0.9, (1 + s) / (10 + s))
        want = d * want + (1 - d) * w.data
        avg.update(s)
    avg.copy_to(net)
    np.testing.assert_allclose(net[0].weight.data, want, rtol=1e-6)
    assert net[0].weight.data.dtype == np.float32
    assert 1.0 < net[1].running_mean.data[0] < 30.0      # averaged, below its last value
    assert int(net[1].num_batches_tracked.data) == 30    # a counter is not averaged


def test_mixup_blends_features_and_targets_alike():
    from shendu.backend import rng
    from shendu.models import AudioClassifier

    m = AudioClassifier(mixup=0.4)
    m.classes_ = np.arange(5)
    f = np.random.default_rng(1).standard_normal((8, 4, 6)).astype(np.float32)
    t = np.array([0, 1, 2, 3, 4, 0, 1, 2])
    shendu.manual_seed(0)
    mixed, soft = m._mix(shendu.Tensor(f), t, rng())
    assert mixed.shape == f.shape and soft.shape == (8, 5)
    np.testing.assert_allclose(soft.sum(1), 1.0, rtol=1e-6)
    lam = soft[np.arange(8), t]                          # the item's own share (>= 1/2)
    assert (lam >= 0.5 - 1e-6).all() and (lam < 1).any()
    # each mixed item is lam * itself + (1 - lam) * one other item of the batch
    for i in np.flatnonzero(lam < 0.999):
        rest = (mixed.data[i] - lam[i] * f[i]) / (1 - lam[i])
        assert min(np.abs(rest - f[j]).max() for j in range(8)) < 1e-3


def test_audio_classifier_ema_and_mixup_are_seeded():
    from shendu.models import AudioClassifier

    X = [speech_like(s, 3000 + 200 * s).astype(np.float32) for s in range(8)]
    y = np.arange(8) % 2
    kw = dict(max_iter=2, batch_size=4, channels=(8,), random_state=3)
    plain = AudioClassifier(**kw, ema=0.0, mixup=0.0).fit(X, y).predict_proba(X)
    for extra in (dict(ema=0.9), dict(mixup=0.4)):
        a = AudioClassifier(**kw, **extra).fit(X, y).predict_proba(X)
        b = AudioClassifier(**kw, **extra).fit(X, y).predict_proba(X)
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, plain)
    with pytest.raises(ValueError, match="ema"):
        AudioClassifier(ema=1.0).fit(X[:2], y[:2])
    with pytest.raises(ValueError, match="mixup"):
        AudioClassifier(mixup=-1).fit(X[:2], y[:2])


@pytest.mark.slow
def test_audio_classifier_save_load_and_predict_from_wav_paths(tmp_path):
    from shendu.models import AudioClassifier

    Xtr, Xte, ytr, yte, rec, te = _subset(3)
    m = AudioClassifier(max_iter=2, channels=(16, 16), random_state=0).fit(Xtr, ytr)
    path = tmp_path / "digits.shendu"
    shendu.save(m, path)
    m2 = shendu.load(path)
    assert isinstance(m2, AudioClassifier)
    paths = [rec.paths[i] for i in te[:30]]
    np.testing.assert_array_equal(m2.predict_proba(paths), m.predict_proba(Xte[:30]))
    np.testing.assert_array_equal(m2.predict(paths), m.predict(Xte[:30]))
    # a WAV at another rate and width is resampled to the model's
    x16 = librosa.resample(Xte[0].astype(np.float64), orig_sr=SR, target_sr=16000)
    sf.write(tmp_path / "x16.wav", x16, 16000, subtype="PCM_24")
    p = m2.predict_proba([str(tmp_path / "x16.wav")])
    assert p.shape == (1, 10) and np.isclose(p.sum(), 1.0)


def test_audio_classifier_input_errors():
    from shendu.models import AudioClassifier, NotFittedError

    m = AudioClassifier()
    with pytest.raises(NotFittedError):
        m.predict([np.zeros(800, np.float32)])
    with pytest.raises(ValueError, match=r"AudioClassifier.fit: X\[1\] must be a non-empty"):
        m.fit([np.zeros(800), np.zeros((2, 800))], [0, 1])
    with pytest.raises(ValueError, match="wrap it in a list"):
        m.fit("a.wav", [0])
    with pytest.raises(ValueError, match="speed_range"):
        AudioClassifier(speed_range=0.7).fit([np.zeros(800)] * 2, [0, 1])
    with pytest.raises(ValueError, match="top_db"):
        AudioClassifier(top_db=0).fit([np.zeros(800)] * 2, [0, 1])
    with pytest.raises(ValueError, match="instance_norm"):
        AudioClassifier(instance_norm=4).fit([np.zeros(800)] * 2, [0, 1])


# ----------------------------------------------------------------------------- CLI
def _cli(*args, cwd=None):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "shendu", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_cli_train_audio_eval_and_predict_wavs(tmp_path, bad_files):
    root = fsdd_root()
    data = tmp_path / "mini"
    data.mkdir()
    for d in range(10):
        for spk in ("george", "jackson"):
            for take in (0, 5, 6, 7):
                name = f"{d}_{spk}_{take}.wav"
                (data / name).symlink_to(root / name)
    out = tmp_path / "run"
    r = r_train = _cli("train", "audio", "--data", data, "--epochs", "1", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "AudioClassifier on FSDD" in r.stdout and "test:  accuracy" in r.stdout
    ckpt = out / "best.ckpt"
    assert ckpt.exists()
    good = [root / "4_lucas_0.wav", root / "8_nicolas_1.wav"]
    bad = [bad_files[k] for k in ("empty", "10ms", "corrupt", "text", "hour")]
    missing = tmp_path / "missing.wav"
    r = _cli("predict", ckpt, good[0], *bad, missing, good[1])
    assert r.returncode == 1
    lines = r.stdout.strip().splitlines()
    assert [ln.split(":")[0] for ln in lines] == [str(g) for g in good]
    for ln in lines:
        label, prob = ln.split(": ")[1].split(" (probability ")
        assert label in {str(d) for d in range(10)} and 0.0 < float(prob[:-1]) <= 1.0
    errs = r.stderr.strip().splitlines()
    assert len(errs) == len(bad) + 1
    for p, ln in zip([*bad, missing], errs):
        assert ln.startswith(f"{p}: error: ")
    # eval: the same test split as train reported (FSDD's takes 0-4: 10 digits x 2 speakers)
    test_acc = float(next(ln for ln in r_train.stdout.splitlines()
                          if ln.startswith("test:")).split()[-1])
    r = _cli("eval", ckpt)
    assert r.returncode == 0, r.stderr
    assert "AudioClassifier (epoch 1)" in r.stdout and "[test, 20 samples]" in r.stdout
    assert f"accuracy {test_acc:.4f} ({int(round(test_acc * 20))}/20)" in r.stdout
    assert "log-loss" in r.stdout
    r = _cli("eval", ckpt, "--split", "train")
    assert r.returncode == 0 and "[train, 60 samples]" in r.stdout, r.stderr


@pytest.mark.slow
def test_cli_predict_audio_with_a_non_audio_checkpoint(tmp_path):
    r = _cli("predict", tmp_path / "none.ckpt", tmp_path / "a.wav")
    assert r.returncode == 1 and "no such checkpoint" in r.stderr


@pytest.mark.slow
def test_import_shendu_does_not_import_audio_deps():
    code = ("import sys, shendu, shendu.models, shendu.data.datasets; "
            "bad = [m for m in ('soundfile', 'librosa', 'scipy', 'shendu.audio') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
