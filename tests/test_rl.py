"""shendu.rl: DQN and REINFORCE on Gymnasium — API, errors, reproducibility, saving, CLI."""

import io
import subprocess
import sys

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

import shendu  # noqa: E402
from shendu import nn  # noqa: E402
from shendu.rl import (  # noqa: E402
    DQN,
    REINFORCE,
    EvalCallback,
    ReplayBuffer,
    evaluate_policy,
)
from shendu.rl.common import numpy_forward  # noqa: E402


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # small networks: extra BLAS threads only wait for each other (and on a busy 2-core
    # machine they make a run several times slower)
    tp = pytest.importorskip("threadpoolctl")
    with tp.threadpool_limits(1):
        yield


@pytest.mark.slow
def test_import_shendu_does_not_import_gymnasium():
    code = ("import sys, shendu, shendu.rl; "
            "print('gymnasium' in sys.modules, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------- errors
def test_continuous_action_space_is_one_clear_sentence():
    with pytest.raises(ValueError) as e:
        DQN("Pendulum-v1")
    msg = str(e.value)
    assert "DQN needs a discrete action space" in msg and "Pendulum-v1" in msg
    assert "Box" in msg and "\n" not in msg


def test_unknown_env_id():
    with pytest.raises(ValueError) as e:
        DQN("CartPoel-v1")
    msg = str(e.value)
    assert "unknown environment id 'CartPoel-v1'" in msg and "\n" not in msg


def test_q_network_output_size_mismatch():
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    with pytest.raises(ValueError) as e:
        DQN("CartPole-v1", q_net=net)
    msg = str(e.value)
    assert "2 actions" in msg and "(3,)" in msg and "\n" not in msg


def test_q_network_wrong_input_size():
    net = nn.Sequential(nn.Linear(5, 2))
    with pytest.raises(ValueError, match="cannot take observations of shape"):
        DQN("CartPole-v1", q_net=net)


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        DQN("CartPole-v1", batch_size=0)
    with pytest.raises(ValueError, match="gamma"):
        DQN("CartPole-v1", gamma=1.5)


# ---------------------------------------------------------------- pieces
def test_numpy_forward_matches_module_forward():
    shendu.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.ReLU(),
                        nn.Linear(8, 3))
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    x0 = x.copy()
    with shendu.no_grad():
        want = net(shendu.tensor(x)).data
    got = numpy_forward(net)(x)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert np.array_equal(x, x0)                  # the input is not written into


def test_numpy_forward_falls_back_for_other_modules():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, x):
            return self.lin(x) * 2

    m = Twice()
    x = np.ones((3, 2), dtype=np.float32)
    with shendu.no_grad():
        want = m(shendu.tensor(x)).data
    np.testing.assert_array_equal(numpy_forward(m)(x), want)


def test_replay_buffer_ring_and_sampling():
    buf = ReplayBuffer(5, (2,))
    for i in range(7):
        buf.add([i, -i], i % 2, float(i), [i + 1, -i - 1], i == 6)
    assert len(buf) == 5 and buf.pos == 2
    assert sorted(buf.rewards.tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    obs, act, rew, nxt, term = buf.sample(64, np.random.default_rng(0))
    assert obs.shape == (64, 2) and act.dtype == np.int64
    np.testing.assert_array_equal(obs[:, 0], rew)              # transitions stay whole
    np.testing.assert_array_equal(nxt[:, 0], rew + 1)
    np.testing.assert_array_equal(term, (rew == 6).astype(np.float32))
    back = ReplayBuffer.from_state(buf.state())
    np.testing.assert_array_equal(back.obs, buf.obs)


def test_double_dqn_target():
    agent = DQN("CartPole-v1", seed=0, learning_starts=0, batch_size=4, buffer_size=4)
    rng = np.random.default_rng(1)
    for _ in range(4):
        agent.replay_buffer.add(rng.normal(size=4), 1, 1.0, rng.normal(size=4), False)
    nxt = agent.replay_buffer.next_obs
    online, target = agent.q_values(nxt), agent._q_target(nxt)
    want = 1.0 + 0.99 * target[np.arange(4), online.argmax(1)]
    # with lr 0 the step leaves weights alone; its loss is the Huber loss to the target
    agent.optimizer.param_groups[0]["lr"] = 0.0
    agent.rng = np.random.Generator(np.random.PCG64(5))
    idx = np.random.Generator(np.random.PCG64(5)).integers(0, 4, size=4)
    q = agent.q_values(agent.replay_buffer.obs[idx])[:, 1]
    d = np.abs(q - want[idx])
    huber = np.where(d < 1, 0.5 * d ** 2, d - 0.5).mean()
    assert agent._train_step() == pytest.approx(huber, rel=1e-5)


# ---------------------------------------------------------------- runs
def _short_run(seed):
    agent = DQN("CartPole-v1", seed=seed, learning_starts=200)
    agent.learn(1500)
    return agent


@pytest.mark.slow
def test_same_seed_same_run_bit_for_bit():
    a, b = _short_run(7), _short_run(7)
    assert a.history["episode_returns"] == b.history["episode_returns"]
    assert a.history["losses"] == b.history["losses"] and len(a.history["losses"]) > 100
    for p, q in zip(a.q_net.parameters(), b.q_net.parameters()):
        assert np.array_equal(p.data, q.data)
    c = _short_run(8)
    assert c.history["episode_returns"] != a.history["episode_returns"]


def test_history_and_learn_continues():
    agent = DQN("CartPole-v1", seed=0, learning_starts=100)
    agent.learn(600)
    h = agent.history
    assert agent.num_timesteps == 600
    assert sum(h["episode_lengths"]) <= 600 and len(h["episode_returns"]) >= 5
    assert len(h["losses"]) == len(h["loss_steps"]) == (600 - 100) // 4 * agent.gradient_steps
    agent.learn(400)
    assert agent.num_timesteps == 1000


def test_callback_can_stop_and_eval_callback_records():
    agent = DQN("CartPole-v1", seed=0)
    agent.learn(10_000, callback=lambda ag: ag.num_timesteps < 300)
    assert agent.num_timesteps == 300
    cb = EvalCallback("CartPole-v1", eval_freq=100, n_eval_episodes=2, seed=0)
    agent.learn(200, callback=cb)
    assert [e[0] for e in agent.history["eval"]] == [400, 500]


def test_eval_callback_stops_at_threshold():
    agent = DQN("CartPole-v1", seed=0)
    cb = EvalCallback("CartPole-v1", eval_freq=100, n_eval_episodes=2, reward_threshold=1.0,
                      confirm_episodes=3, seed=0)
    agent.learn(1000, callback=cb)
    assert cb.solved_at == 100 and agent.num_timesteps == 100


def test_evaluate_policy_mean_std_and_episode_lists():
    agent = DQN("CartPole-v1", seed=0)
    rets, lens = evaluate_policy(agent, "CartPole-v1", 5, seed=1, return_episode_rewards=True)
    assert len(rets) == 5 and rets == [float(n) for n in lens]   # CartPole pays 1 per step
    mean, std = evaluate_policy(agent, "CartPole-v1", 5, seed=1)
    assert mean == pytest.approx(np.mean(rets)) and std == pytest.approx(np.std(rets))


def test_predict_single_and_batch():
    agent = DQN("CartPole-v1", seed=0)
    obs = np.zeros((3, 4), dtype=np.float32)
    a, state = agent.predict(obs[0])
    assert isinstance(a, int) and state is None
    acts, _ = agent.predict(obs)
    assert acts.shape == (3,)
    with pytest.raises(ValueError, match="expected an observation of shape"):
        agent.predict(np.zeros(5))


def test_save_load_round_trip(tmp_path):
    agent = DQN("CartPole-v1", seed=0, learning_starts=100)
    agent.learn(800)
    path = tmp_path / "agent.shendu"
    shendu.save(agent, path)
    back = shendu.load(path)
    assert isinstance(back, DQN) and back.env is None and back.env_id == "CartPole-v1"
    obs = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    np.testing.assert_array_equal(back.q_values(obs), agent.q_values(obs))
    assert back.history == agent.history and back.num_timesteps == 800
    assert len(back.replay_buffer) == 0                       # not saved unless asked
    back.set_env("CartPole-v1")
    back.learn(100)
    assert back.num_timesteps == 900
    agent2 = DQN.load(path, env="CartPole-v1")
    assert agent2.learning_rate == agent.learning_rate
    with open(path, "rb") as f:
        assert b"pickle" not in f.read()[:200]


def test_save_with_replay_buffer(tmp_path):
    agent = DQN("CartPole-v1", seed=0, save_replay_buffer=True)
    agent.learn(300)
    agent.save(tmp_path / "a.shendu")
    back = DQN.load(tmp_path / "a.shendu")
    assert len(back.replay_buffer) == 300
    np.testing.assert_array_equal(back.replay_buffer.obs[:300], agent.replay_buffer.obs[:300])


def test_progress_bar_shows_running_return(capsys):
    agent = DQN("CartPole-v1", seed=0)
    agent.learn(300, progress_bar=True)
    err = capsys.readouterr().err
    assert "return" in err and "300/300" in err


@pytest.mark.slow
def test_reinforce_learns_cartpole_partly():
    agent = REINFORCE("CartPole-v1", seed=0)
    agent.learn(30_000)
    r = agent.history["episode_returns"]
    assert np.mean(r[-20:]) > 3 * np.mean(r[:20])
    mean, _ = evaluate_policy(agent, "CartPole-v1", 10, seed=0)
    assert mean > 150


def test_reinforce_errors():
    with pytest.raises(ValueError, match="REINFORCE needs a discrete action space"):
        REINFORCE("MountainCarContinuous-v0")
    with pytest.raises(ValueError, match=r"outputs \(5,\)"):
        REINFORCE("CartPole-v1", policy_net=nn.Linear(4, 5))


# ---------------------------------------------------------------- CLI
def cli(*args, input=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "shendu", *map(str, args)],
                          capture_output=True, text=True, timeout=600, input=input, cwd=cwd)


@pytest.mark.slow
def test_cli_train_and_eval_cartpole(tmp_path):
    r = cli("train", "cartpole", "--timesteps", "3000", "--no-progress", "--out", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "greedy return over 100 episodes" in r.stdout
    path = tmp_path / "CartPole-v1.dqn.shendu"
    assert path.exists()
    e = cli("eval", path, "--episodes", "5")
    assert e.returncode == 0, e.stderr
    assert "DQN (3000 steps) on CartPole-v1" in e.stdout


@pytest.mark.slow
def test_cli_unknown_env_is_one_line(tmp_path):
    r = cli("train", "rl", "--env", "NoSuchEnv-v0", "--out", tmp_path)
    assert r.returncode == 1
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown environment id 'NoSuchEnv-v0'" in lines[0]
    r = cli("train", "rl", "--env", "Pendulum-v1", "--out", tmp_path)
    assert r.returncode == 1 and "discrete action space" in r.stderr


@pytest.mark.slow
def test_cli_train_other_models_still_need_data():
    r = cli("train", "mlp")
    assert r.returncode == 2 and "--data" in r.stderr


def test_cli_play_rejects_bad_moves(tmp_path):
    from shendu.rl import TDSelfPlay
    from shendu.rl.cli import cmd_play

    agent = TDSelfPlay(seed=0).learn(64)
    agent.save(tmp_path / "t.shendu")

    class Args:
        agent = str(tmp_path / "t.shendu")
        second = False
        seed = 0

    moves = "abc\n0\n5\n5\n" + "\n".join(str(i) for i in range(1, 10)) + "\n"
    out = io.StringIO()
    assert cmd_play(Args, stdin=io.StringIO(moves), stdout=out) == 0
    text = out.getvalue()
    assert "'abc' is not a square" in text and "'0' is not a square" in text
    assert "square 5 is already taken" in text
    assert any(w in text for w in ("you win", "computer wins", "draw"))


@pytest.mark.slow
def test_tour_game_ai_chapter(tmp_path):
    from shendu.tour import run_tour

    buf = io.StringIO()
    res = run_tour(quick=True, only="game_ai", out=str(tmp_path / "t"), stream=buf)
    assert not res.failed
    dqn = next(r for r in res.rows if r.algorithm.startswith("Deep Q-network"))
    learned = float(dqn.result.split("greedy return ")[1].split()[0])
    rand = float(dqn.contrast.split("random policy: ")[1])
    assert learned > 3 * rand, (dqn.result, dqn.contrast)
    ttt = next(r for r in res.rows if r.algorithm.startswith("TD self-play"))
    assert "vs perfect play" in ttt.result and "vs random" in ttt.contrast


def test_reinforce_save_load_and_reproducible(tmp_path):
    a = REINFORCE("CartPole-v1", seed=4)
    a.learn(1000)
    b = REINFORCE("CartPole-v1", seed=4)
    b.learn(1000)
    assert a.history["losses"] == b.history["losses"] and len(a.history["losses"]) > 3
    shendu.save(a, tmp_path / "r.shendu")
    c = shendu.load(tmp_path / "r.shendu")
    assert isinstance(c, REINFORCE)
    obs = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(c.action_probabilities(obs), a.action_probabilities(obs))
