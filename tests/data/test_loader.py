import json

import numpy as np
import pytest

from cnnkit.data import ArrayDataset, Compose, DataLoader, RandomCrop, RandomHorizontalFlip, ToFloat
from cnnkit.data.loader import TRANSFORM_STREAM


def indexed(n=10, classes=3):
    """Image i is filled with the value i, so a batch tells which samples it holds."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 1, 2, 2)).copy()
    return ArrayDataset(images, np.arange(n) % classes)


def ids(x):
    return np.rint(x[:, 0, 0, 0] * 255).astype(int).tolist()


def run_epoch(loader):
    return [(x.copy(), y.copy()) for x, y in loader]


def test_batches_in_order_with_partial_last_batch():
    loader = DataLoader(indexed(10), batch_size=4)
    assert len(loader) == 3
    batches = run_epoch(loader)
    assert [ids(x) for x, _ in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    x, y = batches[0]
    assert x.dtype == np.float32 and x.shape == (4, 1, 2, 2) and y.dtype == np.int64
    assert y.tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(x[1], 1 / 255)  # default transform: ToFloat


def test_drop_last():
    loader = DataLoader(indexed(10), batch_size=4, drop_last=True, shuffle=True)
    assert len(loader) == 2
    batches = run_epoch(loader)
    assert len(batches) == 2 and all(len(y) == 4 for _, y in batches)
    assert len(DataLoader(indexed(8), batch_size=4, drop_last=True)) == 2  # nothing to drop
    assert len(DataLoader(indexed(3), batch_size=4, drop_last=True)) == 0
    assert run_epoch(DataLoader(indexed(3), batch_size=4, drop_last=True)) == []


def test_same_seed_same_batches_and_epochs_differ():
    a, b = DataLoader(indexed(50), 8, shuffle=True, seed=3), DataLoader(indexed(50), 8, shuffle=True, seed=3)
    ea0, ea1 = [ids(x) for x, _ in a], [ids(x) for x, _ in a]
    eb0 = [ids(x) for x, _ in b]
    assert ea0 == eb0
    assert ea0 != ea1  # epoch 1 has its own order
    assert sorted(sum(ea0, [])) == list(range(50)) and sorted(sum(ea1, [])) == list(range(50))
    other = DataLoader(indexed(50), 8, shuffle=True, seed=4)
    assert [ids(x) for x, _ in other] != ea0
    # the documented order: epoch e is default_rng([seed, e]).permutation(N)
    assert sum(ea1, []) == np.random.default_rng([3, 1]).permutation(50).tolist()


def test_set_epoch_reproduces_any_epoch_alone():
    a = DataLoader(indexed(30), 7, shuffle=True, seed=1)
    epochs = [[ids(x) for x, _ in a] for _ in range(4)]
    assert a.epoch == 4
    b = DataLoader(indexed(30), 7, shuffle=True, seed=1)
    b.set_epoch(2)
    assert [ids(x) for x, _ in b] == epochs[2]
    assert b.epoch == 3
    with pytest.raises(ValueError, match="epoch must be a non-negative int"):
        b.set_epoch(-1)
    with pytest.raises(ValueError, match=r"batch must be an int in 0..len\(loader\)"):
        b.set_epoch(1, batch=6)


def test_set_epoch_keeps_a_resumed_position_in_the_same_epoch():
    a = DataLoader(indexed(30), 7, shuffle=True, seed=1)
    whole = [ids(x) for x, _ in a]
    b = DataLoader(indexed(30), 7, shuffle=True, seed=1)
    b.load_state_dict(dict(a.state_dict(), epoch=0, batch=3))
    b.set_epoch(0)  # a trainer's habitual call at the top of the epoch
    assert [ids(x) for x, _ in b] == whole[3:]
    b.set_epoch(0)  # the cursor moved on to epoch 1: this is another epoch, so it starts at batch 0
    assert [ids(x) for x, _ in b] == whole
    it = iter(b)
    next(it)
    b.set_epoch(1, batch=0)  # explicit restart
    assert b.state_dict()["batch"] == 0


def augmented_loader(seed=11):
    images = np.random.default_rng(0).integers(0, 256, (23, 3, 6, 6), dtype=np.uint8)
    ds = ArrayDataset(images, np.arange(23) % 5)
    tf = Compose([RandomCrop(5, padding=1), RandomHorizontalFlip(), ToFloat()])
    return DataLoader(ds, batch_size=4, shuffle=True, transform=tf, seed=seed)


def assert_same_batches(got, want):
    assert len(got) == len(want)
    for (gx, gy), (wx, wy) in zip(got, want):
        np.testing.assert_array_equal(gx, wx)
        np.testing.assert_array_equal(gy, wy)


def test_resume_mid_epoch_yields_the_rest_and_the_same_later_epochs():
    reference = augmented_loader()
    ref = [run_epoch(reference) for _ in range(3)]  # epochs 0, 1, 2 uninterrupted

    first = augmented_loader()
    run_epoch(first)  # epoch 0
    seen = []
    for x, y in first:  # epoch 1, interrupted after 2 batches
        seen.append((x.copy(), y.copy()))
        if len(seen) == 2:
            state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
            break
    assert state["epoch"] == 1 and state["batch"] == 2 and state["seed"] == 11

    resumed = augmented_loader(seed=999)  # the seed comes from the state
    resumed.load_state_dict(state)
    rest = run_epoch(resumed)
    assert_same_batches(seen + rest, ref[1])
    assert len(rest) == len(resumed) - 2
    assert_same_batches(run_epoch(resumed), ref[2])

    # the interrupted loader itself goes on from where it stopped too
    assert_same_batches(run_epoch(first), ref[1][2:])


def test_augmentation_is_reproducible_and_varies_by_batch():
    loader = augmented_loader()
    x0, _ = loader.get_batch(0, 1)
    x1, _ = loader.get_batch(0, 1)
    np.testing.assert_array_equal(x0, x1)
    assert loader.batch == 0 and loader.epoch == 0  # get_batch does not move the cursor
    seq = [np.random.default_rng([11, 0, b, TRANSFORM_STREAM]).integers(0, 3, 4).tolist() for b in range(3)]
    assert seq[0] != seq[1]  # each batch draws its own offsets
    # a batch of epoch 0 and the same samples in epoch 1 get different crops
    plain = DataLoader(loader.dataset, batch_size=23, transform=loader.transform, seed=11)
    e0, e1 = run_epoch(plain)[0][0], run_epoch(plain)[0][0]
    assert not np.array_equal(e0, e1)


def test_state_after_last_batch_and_at_epoch_end():
    loader = DataLoader(indexed(8), 4, shuffle=True)
    it = iter(loader)
    next(it), next(it)
    assert loader.state_dict()["batch"] == 2 and loader.state_dict()["epoch"] == 0
    resumed = DataLoader(indexed(8), 4, shuffle=True)
    resumed.load_state_dict(loader.state_dict())
    assert run_epoch(resumed) == []  # nothing left of epoch 0
    assert resumed.epoch == 1
    list(it)  # exhaust: the cursor moves to the next epoch
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batch"] == 0


def test_load_state_dict_checks():
    loader = DataLoader(indexed(10), 4, shuffle=True)
    state = loader.state_dict()
    with pytest.raises(ValueError, match="saved batch_size differs.*saved=4, loader=5"):
        DataLoader(indexed(10), 5, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="saved num_samples differs"):
        DataLoader(indexed(11), 4, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="batch is past the end"):
        loader.load_state_dict(dict(state, batch=4))
    with pytest.raises(ValueError, match="expected a dict with epoch, batch and seed"):
        loader.load_state_dict({"epoch": 0})
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        loader.load_state_dict(dict(state, seed=-1))


def test_constructor_and_transform_errors():
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        DataLoader(indexed(), batch_size=0)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        DataLoader(indexed(), seed=-2)
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(indexed(), transform="flip")
    loader = DataLoader(indexed(), transform=lambda x, rng: x)
    with pytest.raises(TypeError, match="transform must return floating pixels; add ToFloat"):
        next(iter(loader))


def test_generic_indexable_dataset():
    class Pairs:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, np.uint8), i % 2

    x, y = next(iter(DataLoader(Pairs(), batch_size=3)))
    assert ids(x) == [0, 1, 2] and y.tolist() == [0, 1, 0] and y.dtype == np.int64
