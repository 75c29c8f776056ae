"""shendu.data: Dataset, TensorDataset, Subset, random_split, samplers, collate, DataLoader."""

import json
from collections import namedtuple

import numpy as np
import pytest
import torch
import torch.utils.data as tud

import shendu
from shendu.data import (
    DataLoader,
    Dataset,
    RandomSampler,
    SequentialSampler,
    Subset,
    TensorDataset,
    default_collate,
    random_split,
)


def make_ds(n=10, d=3, xdtype=np.float32, ydtype=np.int64):
    x = np.arange(n * d).reshape(n, d).astype(xdtype)
    y = (np.arange(n) % 4).astype(ydtype)
    return TensorDataset(x, y), x, y


class Rows(Dataset):
    """A plain Python data set with the same samples as ``TensorDataset(x, y)``."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def labels(loader):
    return [b[1].tolist() for b in loader]


def order_of(loader):
    """The sample indices an epoch visits, read back from a dataset whose label is its index."""
    return [i for b in loader for i in b[1].tolist()]


def index_ds(n):
    return TensorDataset(np.zeros((n, 2), np.float32), np.arange(n))


def per_sample_calls(loader, monkeypatch):
    """How many times an epoch of ``loader`` calls ``TensorDataset.__getitem__``."""
    calls = []
    original = TensorDataset.__getitem__

    def counting(self, i):
        calls.append(i)
        return original(self, i)

    with monkeypatch.context() as m:
        m.setattr(TensorDataset, "__getitem__", counting)
        list(loader)
    return len(calls)


def assert_batches_equal(a, b):
    assert len(a) == len(b)
    for ba, bb in zip(a, b):
        assert type(ba) is type(bb) and len(ba) == len(bb)
        for ta, tb in zip(ba, bb):
            assert ta.dtype == tb.dtype and ta.shape == tb.shape
            np.testing.assert_array_equal(ta.numpy(), tb.numpy())


# ------------------------------------------------------------------------------ datasets
def test_tensor_dataset_items_share_memory_and_keep_dtype():
    ds, x, y = make_ds(xdtype=np.float64, ydtype=np.int32)
    assert len(ds) == 10
    xi, yi = ds[3]
    assert isinstance(xi, shendu.Tensor) and isinstance(yi, shendu.Tensor)
    assert xi.dtype == np.float64 and yi.dtype == np.int32 and yi.shape == ()
    np.testing.assert_array_equal(xi.numpy(), x[3])
    assert int(yi) == y[3]
    assert np.shares_memory(xi.numpy(), x)
    np.testing.assert_array_equal(ds[-1][0].numpy(), x[-1])  # negative index, like a sequence


def test_tensor_dataset_from_tensors_and_lists():
    t = shendu.randn(4, 2, requires_grad=True)
    ds = TensorDataset(t, [0, 1, 2, 3], [[0.5], [1.5], [2.5], [3.5]])
    assert not ds[0][0].requires_grad
    np.testing.assert_array_equal(ds[2][0].numpy(), t.data[2])
    assert ds.arrays[1].dtype == np.int64
    assert ds.arrays[2].dtype == np.float32  # lists follow shendu.tensor: default dtype
    assert len(ds.tensors) == 3 and ds.tensors[0].shape == (4, 2)


def test_tensor_dataset_errors():
    with pytest.raises(ValueError, match=r"equal length along dim 0, got sizes \[5, 4\]"):
        TensorDataset(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match="argument 1 must have a first"):
        TensorDataset(np.zeros(3), np.float32(1.0))
    ds, _, _ = make_ds(n=5)
    with pytest.raises(IndexError, match="TensorDataset index 5 out of range for length 5"):
        ds[5]
    with pytest.raises(IndexError, match="index -6 out of range"):
        ds[-6]
    with pytest.raises(TypeError, match="index must be an int, got float"):
        ds[1.0]


def test_dataset_base_class_demands_len_and_getitem():
    class Empty(Dataset):
        pass

    with pytest.raises(NotImplementedError, match="Empty must define __len__"):
        len(Empty())
    with pytest.raises(NotImplementedError, match="Empty must define __getitem__"):
        Empty()[0]


def test_subset_maps_indices_and_checks_range():
    ds, x, _ = make_ds()
    sub = Subset(ds, [7, 2, -1])
    assert len(sub) == 3
    np.testing.assert_array_equal(sub[0][0].numpy(), x[7])
    np.testing.assert_array_equal(sub[2][0].numpy(), x[9])
    with pytest.raises(IndexError, match="Subset index 3 out of range for length 3"):
        sub[3]
    with pytest.raises(IndexError, match="index 10 out of range for a dataset of length 10"):
        Subset(ds, [0, 10])
    with pytest.raises(TypeError, match="int indices"):
        Subset(ds, [0.5])


@pytest.mark.filterwarnings("ignore:Length of split")
@pytest.mark.parametrize("n,fracs", [(10, [0.3, 0.3, 0.4]), (11, [0.5, 0.5]), (7, [0.1, 0.2, 0.7]),
                                     (100, [0.333, 0.333, 0.334]), (5, [1.0, 0.0])])
def test_random_split_fraction_sizes_match_torch(n, fracs):
    ours = [len(s) for s in random_split(index_ds(n), fracs, generator=0)]
    theirs = [len(s) for s in tud.random_split(range(n), fracs)]
    assert ours == theirs


def test_random_split_partitions_and_repeats():
    ds = index_ds(20)
    parts = random_split(ds, [5, 15], generator=3)
    got = [sorted(int(p[i][1]) for i in range(len(p))) for p in parts]
    assert sorted(got[0] + got[1]) == list(range(20))
    assert [len(g) for g in got] == [5, 15]
    again = random_split(ds, [5, 15], generator=np.random.default_rng(3))
    np.testing.assert_array_equal(parts[0].indices, again[0].indices)
    other = random_split(ds, [5, 15], generator=4)
    assert not np.array_equal(parts[0].indices, other[0].indices)
    # without a generator: shendu's global generator, fixed by manual_seed
    shendu.manual_seed(11)
    a = random_split(ds, [10, 10])
    shendu.manual_seed(11)
    b = random_split(ds, [10, 10])
    np.testing.assert_array_equal(a[1].indices, b[1].indices)


def test_random_split_errors():
    ds = index_ds(10)
    with pytest.raises(ValueError, match=r"lengths \[3, 3\] sum to 6, but the dataset has 10"):
        random_split(ds, [3, 3])
    with pytest.raises(ValueError, match="sum to 1"):
        random_split(ds, [0.5, 0.4])
    with pytest.raises(ValueError, match="non-negative"):
        random_split(ds, [-1, 11])
    with pytest.raises(TypeError, match="generator must be"):
        random_split(ds, [5, 5], generator="seed")


# --------------------------------------------------------------------------------- batching
def test_batches_in_order_without_drop_last():
    ds, x, y = make_ds(n=10)
    loader = DataLoader(ds, batch_size=3)
    assert len(loader) == 4
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(3, 3), (3, 3), (3, 3), (1, 3)]
    np.testing.assert_array_equal(np.concatenate([b[0].numpy() for b in batches]), x)
    np.testing.assert_array_equal(np.concatenate([b[1].numpy() for b in batches]), y)
    assert all(isinstance(b, tuple) and not b[0].requires_grad for b in batches)


@pytest.mark.parametrize("n,bs,expect", [(10, 3, [3, 3, 3]), (9, 3, [3, 3, 3]), (2, 3, []),
                                         (3, 3, [3])])
def test_drop_last(n, bs, expect):
    loader = DataLoader(index_ds(n), batch_size=bs, drop_last=True)
    assert len(loader) == len(expect)
    assert [len(b[1]) for b in loader] == expect
    assert len(DataLoader(index_ds(n), batch_size=bs)) == -(-n // bs)


def test_batches_match_torch_dataloader():
    ds, x, y = make_ds(n=13, d=4)
    t_loader = tud.DataLoader(tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                              batch_size=5, drop_last=False)
    s_loader = DataLoader(ds, batch_size=5)
    assert len(s_loader) == len(t_loader)
    for (sx, sy), (tx, ty) in zip(s_loader, t_loader):
        np.testing.assert_array_equal(sx.numpy(), tx.numpy())
        np.testing.assert_array_equal(sy.numpy(), ty.numpy())


def test_shuffle_visits_each_index_once_per_epoch_and_reshuffles():
    loader = DataLoader(index_ds(23), batch_size=4, shuffle=True)
    epochs = [order_of(loader) for _ in range(4)]
    for e in epochs:
        assert sorted(e) == list(range(23))
    assert len({tuple(e) for e in epochs}) == 4
    assert all(e != list(range(23)) for e in epochs)


def test_shuffle_with_drop_last_covers_distinct_indices():
    loader = DataLoader(index_ds(23), batch_size=4, shuffle=True, drop_last=True)
    e = order_of(loader)
    assert len(e) == 20 and len(set(e)) == 20


def test_shuffle_repeatable_with_generator_seed_or_global_seed():
    ds = index_ds(30)
    a = DataLoader(ds, batch_size=7, shuffle=True, generator=5)
    b = DataLoader(ds, batch_size=7, shuffle=True, generator=np.random.default_rng(5))
    shendu.manual_seed(99)  # a loader with its own generator ignores the global one
    assert [order_of(a) for _ in range(3)] == [order_of(b) for _ in range(3)]
    c = DataLoader(ds, batch_size=7, shuffle=True, generator=6)
    assert order_of(c) != order_of(DataLoader(ds, batch_size=7, shuffle=True, generator=5))

    def global_orders(seed):
        shendu.manual_seed(seed)
        loader = DataLoader(ds, batch_size=7, shuffle=True)
        return [order_of(loader) for _ in range(3)]

    assert global_orders(1) == global_orders(1)
    assert global_orders(1) != global_orders(2)


def test_break_mid_epoch_then_new_epoch_is_complete():
    loader = DataLoader(index_ds(10), batch_size=3, shuffle=True, generator=0)
    for _ in loader:
        break
    assert sorted(order_of(loader)) == list(range(10))


def test_two_iterators_over_one_loader_are_independent():
    ds = index_ds(9)
    loader = DataLoader(ds, batch_size=2)
    pairs = [(a[1].tolist(), b[1].tolist()) for a, b in zip(loader, loader)]
    assert all(a == b for a, b in pairs) and len(pairs) == 5


# -------------------------------------------------------------- fast path == slow path
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("xdtype,ydtype", [(np.float32, np.int64), (np.float64, np.int32),
                                           (np.float32, np.uint8), (np.float32, np.bool_)])
def test_tensor_dataset_fast_path_equals_per_sample_collate(shuffle, xdtype, ydtype,
                                                            monkeypatch):
    ds, x, y = make_ds(n=17, xdtype=xdtype, ydtype=ydtype)
    fast = DataLoader(ds, batch_size=4, shuffle=shuffle, generator=1)
    slow_py = DataLoader(Rows(x, y), batch_size=4, shuffle=shuffle, generator=1)
    slow_fn = DataLoader(ds, batch_size=4, shuffle=shuffle, generator=1,
                         collate_fn=lambda b: default_collate(b))
    f, p, s = list(fast), list(slow_py), list(slow_fn)
    assert_batches_equal(f, p)
    assert_batches_equal(f, s)
    assert per_sample_calls(fast, monkeypatch) == 0
    assert per_sample_calls(slow_fn, monkeypatch) == 17
    assert f[0][0].dtype == xdtype
    assert f[0][1].dtype == (np.bool_ if ydtype == np.bool_ else np.int64)


def test_fast_path_through_nested_subsets(monkeypatch):
    ds, x, y = make_ds(n=20)
    train, _ = random_split(ds, [0.75, 0.25], generator=2)
    inner = Subset(train, [4, 0, 9, 3, 3])
    fast = DataLoader(inner, batch_size=2)
    assert per_sample_calls(fast, monkeypatch) == 0
    expect = train.indices[[4, 0, 9, 3, 3]]
    got = np.concatenate([b[0].numpy() for b in fast])
    np.testing.assert_array_equal(got, x[expect])
    assert_batches_equal(list(fast), list(DataLoader(inner, batch_size=2, collate_fn=lambda b:
                                                     default_collate(b))))


def test_subclass_overriding_getitem_is_honoured():
    class Plus1(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return shendu.Tensor(x.numpy() + 1), y

    ds = Plus1(np.zeros((4, 2), np.float32), np.arange(4))
    loader = DataLoader(ds, batch_size=4)
    np.testing.assert_array_equal(next(iter(loader))[0].numpy(), np.ones((4, 2)))


# ----------------------------------------------------------------------------------- collate
def test_collate_number_and_array_dtypes():
    assert default_collate([1.0, 2.5]).dtype == np.float32
    assert default_collate([1, 2]).dtype == np.int64
    assert default_collate([True, False]).dtype == np.bool_
    assert default_collate([np.float64(1.0), np.float64(2.0)]).dtype == np.float64
    assert default_collate([np.int8(1), np.int8(2)]).dtype == np.int64
    assert default_collate([np.zeros(2, np.float16)] * 3).dtype == np.float16
    shendu.set_default_dtype("float64")
    assert default_collate([1.0, 2.5]).dtype == np.float64


def test_collate_nested_structures():
    Pair = namedtuple("Pair", "a b")
    samples = [{"img": np.full((2, 2), k, np.float32),
                "meta": (k, float(k) / 2, f"s{k}"),
                "pair": Pair(shendu.tensor([k, k]), [np.int32(k), {"deep": np.ones(1) * k}])}
               for k in range(3)]
    out = default_collate(samples)
    assert set(out) == {"img", "meta", "pair"}
    assert out["img"].shape == (3, 2, 2) and out["img"].dtype == np.float32
    np.testing.assert_array_equal(out["img"].numpy()[:, 0, 0], [0, 1, 2])
    k, half, names = out["meta"]
    assert isinstance(out["meta"], tuple)
    assert k.dtype == np.int64 and k.tolist() == [0, 1, 2]
    assert half.dtype == np.float32 and half.tolist() == [0.0, 0.5, 1.0]
    assert names == ["s0", "s1", "s2"]
    assert isinstance(out["pair"], Pair)
    assert out["pair"].a.shape == (3, 2) and out["pair"].a.dtype == np.int64
    lab, inner = out["pair"].b
    assert isinstance(out["pair"].b, list)
    assert lab.dtype == np.int64 and lab.tolist() == [0, 1, 2]
    assert inner["deep"].dtype == np.float64 and inner["deep"].shape == (3, 1)


def test_collate_errors_name_the_place():
    with pytest.raises(ValueError, match=r"different shapes at \[0\]: sample 0 has \(2,\), "
                                         r"sample 2 has \(3,\)"):
        default_collate([(np.zeros(2), 1), (np.zeros(2), 1), (np.zeros(3), 1)])
    with pytest.raises(ValueError, match=r"sample 1 has keys \['a', 'c'\], sample 0 has"):
        default_collate([{"a": 1, "b": 2}, {"a": 1, "c": 2}])
    with pytest.raises(ValueError, match="sample 1 has 3 fields, sample 0 has 2"):
        default_collate([(1, 2), (1, 2, 3)])
    with pytest.raises(TypeError, match=r"found NoneType at \['x'\]"):
        default_collate([{"x": None}])
    with pytest.raises(TypeError, match="mix numbers and other types"):
        default_collate([1, "a"])
    with pytest.raises(ValueError, match="non-empty"):
        default_collate([])


def test_custom_collate_fn_gets_lists_of_samples():
    seen = []

    def collate(samples):
        seen.append(len(samples))
        xs, ys = zip(*samples)
        return np.stack([x.numpy() for x in xs]).sum(), [int(v) for v in ys]

    ds, x, _ = make_ds(n=7)
    out = list(DataLoader(ds, batch_size=3, collate_fn=collate))
    assert seen == [3, 3, 1]
    assert out[0][0] == x[:3].sum() and out[2][1] == [int(ds[6][1])]


def test_loader_over_plain_python_dataset():
    class Squares(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if not 0 <= i < 6:
                raise IndexError(i)
            return {"x": float(i), "y": i * i}

    batches = list(DataLoader(Squares(), batch_size=4))
    assert [b["x"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    assert batches[1]["y"].tolist() == [16, 25] and batches[1]["y"].dtype == np.int64
    assert batches[0]["x"].dtype == np.float32


# ------------------------------------------------------------------------- loader options
def test_loader_argument_errors():
    ds = index_ds(4)
    for bad in (0, -1, 1.5, True):             # None: no batching (test below)
        with pytest.raises(ValueError, match="DataLoader expected batch_size a positive int"):
            DataLoader(ds, batch_size=bad)
    with pytest.raises(TypeError, match="map-style dataset"):
        DataLoader(iter(range(3)))
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(ds, sampler=SequentialSampler(ds), shuffle=True)
    with pytest.raises(TypeError, match="collate_fn callable"):
        DataLoader(ds, collate_fn=3)
    with pytest.raises(TypeError, match="generator must be"):
        DataLoader(ds, shuffle=True, generator=1.0)
    loader = DataLoader(Subset(index_ds(3), [0, 1]), batch_size=2)
    loader.dataset.indices[1] = 7  # corrupt it behind the loader's back
    with pytest.raises(IndexError, match="index 7 out of range for length 3"):
        next(iter(loader))


def test_custom_sampler_order_is_followed():
    ds = index_ds(6)
    loader = DataLoader(ds, batch_size=4, sampler=[5, 3, 1, 0, 2, 4])
    assert labels(loader) == [[5, 3, 1, 0], [2, 4]]
    rs = RandomSampler(ds, replacement=True, num_samples=50, generator=0)
    draws = order_of(DataLoader(ds, batch_size=8, sampler=rs))
    assert len(draws) == 50 and set(draws) <= set(range(6)) and len(set(draws)) < 50
    part = order_of(DataLoader(ds, batch_size=8, sampler=RandomSampler(ds, num_samples=4,
                                                                         generator=0)))
    assert len(part) == len(set(part)) == 4
    with pytest.raises(ValueError, match="at most 6 samples, got num_samples=7"):
        RandomSampler(ds, num_samples=7)


# ---------------------------------------------------------------------- resumable position
def test_state_dict_resumes_mid_epoch_with_own_generator():
    ds = index_ds(11)
    ref = DataLoader(ds, batch_size=3, shuffle=True, generator=7)
    full = [labels(ref) for _ in range(3)]

    run = DataLoader(ds, batch_size=3, shuffle=True, generator=7)
    labels(run)  # epoch 0
    it = iter(run)
    first = [next(it)[1].tolist() for _ in range(2)]
    state = json.loads(json.dumps(run.state_dict()))  # JSON round trip, no pickle
    assert state["epoch"] == 1 and state["batch"] == 2 and sorted(state["order"]) == list(range(11))

    resumed = DataLoader(ds, batch_size=3, shuffle=True, generator=123)  # other seed: restored
    resumed.load_state_dict(state)
    assert first + labels(resumed) == full[1]
    assert labels(resumed) == full[2]
    assert resumed.state_dict()["epoch"] == 3 and resumed.state_dict()["order"] is None


def test_state_dict_resume_with_global_generator():
    ds = index_ds(9)
    shendu.manual_seed(4)
    ref = DataLoader(ds, batch_size=2, shuffle=True)
    full = [labels(ref) for _ in range(2)]

    shendu.manual_seed(4)
    run = DataLoader(ds, batch_size=2, shuffle=True)
    it = iter(run)
    next(it)
    state, rng_state = run.state_dict(), shendu.get_rng_state()
    assert state["generator"] is None

    shendu.manual_seed(1000)  # a fresh process, say
    resumed = DataLoader(ds, batch_size=2, shuffle=True)
    resumed.load_state_dict(state)
    shendu.set_rng_state(rng_state)
    assert [full[0][0]] + labels(resumed) == full[0]
    assert labels(resumed) == full[1]


def test_state_dict_at_epoch_boundary_and_errors():
    ds = index_ds(5)
    loader = DataLoader(ds, batch_size=2)
    assert loader.state_dict() == {"epoch": 0, "batch": 0, "order": None, "generator": None}
    labels(loader)
    assert loader.state_dict()["epoch"] == 1
    other = DataLoader(index_ds(6), batch_size=2)
    it = iter(other)
    next(it)
    with pytest.raises(ValueError, match="saved order has 6 indices, but this loader's sampler "
                                         "yields 5"):
        loader.load_state_dict(other.state_dict())
    with pytest.raises(KeyError, match="missing keys"):
        loader.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="no generator of its own"):
        loader.load_state_dict(DataLoader(ds, shuffle=True, generator=0).state_dict())


def test_package_exports_and_lazy_datasets():
    import shendu.data as sd

    assert set(sd.__all__) <= set(dir(sd)) and "datasets" in dir(sd)
    assert shendu.data is sd and "data" in shendu.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(sd, "nope")  # noqa: B009


# ----------------------------------------------------- torch's worker options, batch samplers
WORKER_OPTIONS = [
    {},
    {"num_workers": 2},
    {"num_workers": 2, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 4},
    {"num_workers": 1, "timeout": 5, "in_order": False},
    {"num_workers": -1},
    {"timeout": -1},
    {"prefetch_factor": 2},
    {"num_workers": 1, "prefetch_factor": -1},
    {"persistent_workers": True},
]


@pytest.mark.parametrize("options", WORKER_OPTIONS, ids=lambda o: ",".join(map(str, o.items())))
def test_worker_options_accepted_and_refused_as_torch_does(options):
    x, y = np.arange(20, dtype=np.float32).reshape(10, 2), np.arange(10)
    try:
        tud.DataLoader(tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                       batch_size=3, **options)
        torch_error = None
    except (ValueError, TypeError) as e:
        torch_error = type(e)
    if torch_error is not None:
        with pytest.raises(torch_error):
            DataLoader(TensorDataset(x, y), batch_size=3, **options)
        return
    loader = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True, generator=0,
                        **options)
    plain = DataLoader(TensorDataset(x, y), batch_size=3, shuffle=True, generator=0)
    assert order_of(loader) == order_of(plain)       # same batches whatever the options say


def test_torch_positional_order():
    ds = index_ds(5)
    # torch: (dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn,
    #         pin_memory, drop_last)
    loader = DataLoader(ds, 2, False, None, None, 0, None, False, True)
    assert loader.drop_last and len(loader) == 2 and order_of(loader) == [0, 1, 2, 3]
    assert shendu.data.get_worker_info() is None and tud.get_worker_info() is None


def test_worker_init_fn_runs_once_per_epoch_with_workers():
    calls = []
    loader = DataLoader(index_ds(4), batch_size=2, num_workers=2, worker_init_fn=calls.append)
    for _ in range(3):
        list(loader)
    assert calls == [0, 0, 0]
    list(DataLoader(index_ds(4), batch_size=2, worker_init_fn=calls.append))
    assert calls == [0, 0, 0]                        # no workers asked for: never called
    with pytest.raises(TypeError, match="worker_init_fn callable"):
        DataLoader(index_ds(4), num_workers=1, worker_init_fn=3)


@pytest.mark.parametrize("drop_last", [False, True])
def test_batch_sampler_matches_torch(drop_last):
    x, y = np.arange(22, dtype=np.float32).reshape(11, 2), np.arange(11)
    ours = shendu.data.BatchSampler(SequentialSampler(range(11)), 4, drop_last)
    theirs = tud.BatchSampler(tud.SequentialSampler(range(11)), 4, drop_last)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)
    uneven = [[3, 1], [0, 2, 9, 10], [5], [4, 6, 7, 8]]
    got = DataLoader(TensorDataset(x, y), batch_sampler=uneven)
    want = tud.DataLoader(tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                          batch_sampler=uneven)
    assert len(got) == len(want) == 4
    for (gx, gy), (wx, wy) in zip(got, want, strict=True):
        np.testing.assert_array_equal(gx.numpy(), wx.numpy())
        np.testing.assert_array_equal(gy.numpy(), wy.numpy())
    for bad in ({"batch_size": 2}, {"shuffle": True}, {"drop_last": True},
                {"sampler": SequentialSampler(range(11))}):
        with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
            DataLoader(TensorDataset(x, y), batch_sampler=uneven, **bad)
        with pytest.raises(ValueError, match="mutually exclusive"):
            tud.DataLoader(tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                           batch_sampler=uneven, **bad)


def test_batch_sampler_resumes_mid_epoch():
    ds = index_ds(10)
    batches = [[9, 8, 7], [1], [2, 3, 4, 5], [0, 6]]
    loader = DataLoader(ds, batch_sampler=batches)
    it = iter(loader)
    next(it), next(it)
    state = json.loads(json.dumps(loader.state_dict()))
    again = DataLoader(ds, batch_sampler=batches)
    again.load_state_dict(state)
    assert [b[1].tolist() for b in again] == batches[2:]


def test_lazy_draws_with_replacement_cost_no_memory_and_resume():
    ds = index_ds(7)
    sampler = RandomSampler(ds, replacement=True, num_samples=int(1e10), generator=3)
    loader = DataLoader(ds, batch_size=50_000, sampler=sampler)
    assert len(loader) == int(1e10) // 50_000
    it = iter(loader)
    first = [next(it)[1].numpy().copy() for _ in range(3)]   # crosses a 65,536 chunk edge
    assert all(b.shape == (50_000,) and b.min() >= 0 and b.max() < 7 for b in first)
    counts = np.bincount(np.concatenate(first), minlength=7) / 150_000
    np.testing.assert_allclose(counts, 1 / 7, atol=0.01)      # uniform draws
    state = json.loads(json.dumps(loader.state_dict()))
    assert len(json.dumps(state)) < 1000                     # saved as its seed, not the order
    fourth = next(it)[1].numpy()
    again = DataLoader(ds, batch_size=50_000, sampler=RandomSampler(
        ds, replacement=True, num_samples=int(1e10), generator=3))
    again.load_state_dict(state)
    np.testing.assert_array_equal(next(iter(again))[1].numpy(), fourth)
    # the draws read back in any slicing are one sequence
    order = loader._current.order
    np.testing.assert_array_equal(order[0:150_000], np.concatenate(first))
    np.testing.assert_array_equal(order[65_530:65_540], np.concatenate(first)[65_530:65_540])
    head = [i for _, i in zip(range(10), iter(RandomSampler(
        ds, replacement=True, num_samples=int(1e10), generator=3)))]
    np.testing.assert_array_equal(head, first[0][:10])


# ------------------------------------------------------------ batch_size=None: no batching
class _Samples:
    """Samples of every kind default_convert meets: an array, a NumPy scalar, a Python int,
    a string, a dict and a namedtuple."""

    Pair = namedtuple("Pair", "a b")

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return (np.arange(3, dtype=np.float32) + i, np.int64(i), i, f"s{i}",
                {"v": np.full(2, i, np.float64)}, self.Pair(np.int32(i), 1.5))


def _plain(x):
    """A sample with its tensors (shendu's or torch's) as NumPy arrays, for comparison."""
    if isinstance(x, (shendu.Tensor, torch.Tensor)):
        return ("tensor", np.asarray(x.numpy()), str(x.numpy().dtype))
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return (type(x).__name__, [_plain(v) for v in x])
    return (type(x).__name__, x)


def _same(a, b):
    if isinstance(a, tuple) and a and a[0] == "tensor":
        assert b[0] == "tensor" and a[2] == b[2]
        np.testing.assert_array_equal(a[1], b[1])
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, tuple) and isinstance(a[1], list):
        assert a[0] == b[0] and len(a[1]) == len(b[1])
        for u, v in zip(a[1], b[1]):
            _same(u, v)
    else:
        assert a == b


def test_batch_size_none_yields_converted_samples_as_torch():
    ours = list(DataLoader(_Samples(), batch_size=None))
    theirs = list(tud.DataLoader(_Samples(), batch_size=None))
    assert len(DataLoader(_Samples(), batch_size=None)) == len(ours) == len(theirs) == 5
    for a, b in zip(ours, theirs):
        _same(_plain(a), _plain(b))
    shuffled = [s[2] for s in DataLoader(_Samples(), batch_size=None, shuffle=True, generator=0)]
    assert sorted(shuffled) == list(range(5))
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(_Samples(), batch_size=None, drop_last=True)
    with pytest.raises(ValueError, match="drop_last"):
        tud.DataLoader(_Samples(), batch_size=None, drop_last=True)


def test_batch_size_none_resumes_mid_epoch():
    loader = DataLoader(index_ds(7), batch_size=None, shuffle=True, generator=3)
    it = iter(loader)
    seen = [next(it) for _ in range(3)]
    state = json.loads(json.dumps(loader.state_dict()))
    rest = list(it)
    again = DataLoader(index_ds(7), batch_size=None, shuffle=True, generator=3)
    again.load_state_dict(state)

    def labels(samples):
        return [int(y.numpy()) for _, y in samples]

    assert labels(again) == labels(rest) and len(rest) == 4
    assert sorted(labels(seen) + labels(rest)) == list(range(7))
