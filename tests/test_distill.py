"""The distillers: registry, losses (finite, gradients to the student only, decreasing), pair checks,
the indexed loader, and a distillation run end to end with the teacher reused from the store."""
import json

import pytest
import torch

from greenlib import config, distill, experiments
from greenlib.data import GPULoader, TorchvisionLoader, make_synthetic
from greenlib.distill import tables
from greenlib.distill.base import Outputs
from greenlib.models import build_model

NAMES = ["KD", "FitNet", "AT", "SP", "CC", "VID", "RKD", "PKT", "AB", "FT", "FSP", "NST", "CRD"]
TEACHER, STUDENT = "resnet14", "resnet8"  # small zoo models; same widths, so every method connects
NUM_CLASSES = 10


def test_registry_lists_exactly_the_13_methods_in_repdistillers_order():
    assert distill.names() == NAMES
    assert list(config.SECTIONS["distillation"]["methods"].choices) == NAMES
    assert all(cls.name == name for name, cls in distill.DISTILLERS.items())


def test_unknown_method_fails_naming_the_accepted_ones():
    with pytest.raises(ValueError, match=r"unknown distillation method 'KDD'; accepted: KD, FitNet, .*CRD"):
        distill.get("KDD")


def test_bad_hyperparameters_fail_clearly():
    labels = torch.arange(NUM_CLASSES)
    with pytest.raises(ValueError, match=r"KD: unknown hyper-parameter 'T'; accepted: ce_weight, loss_weight"):
        distill.build("KD", TEACHER, STUDENT, labels, NUM_CLASSES, T=4)
    with pytest.raises(ValueError, match=r"temperature='4' must be float"):
        distill.build("KD", TEACHER, STUDENT, labels, NUM_CLASSES, temperature="4")
    assert distill.build("KD", TEACHER, STUDENT, labels, NUM_CLASSES, temperature=2).hparams["temperature"] == 2.0


@pytest.mark.parametrize("method, teacher, student, hparams, words", [
    ("FSP", "wrn-16-2", "resnet8", {}, "FSP cannot distil wrn-16-2 -> resnet8: it needs equal channels"),
    ("AT", "vgg8", "resnet8", {}, "AT cannot distil vgg8 -> resnet8: .* the student has 3 stages, the teacher 4"),
    ("FitNet", "vgg8", "resnet8", {"hint_layer": 4}, "FitNet cannot distil vgg8 -> resnet8: hint_layer=4 is not"),
])
def test_incompatible_pair_fails_with_a_clear_message(method, teacher, student, hparams, words):
    with pytest.raises(distill.IncompatiblePairError, match=words):
        distill.build(method, teacher, student, torch.arange(NUM_CLASSES), NUM_CLASSES, **hparams)


def test_regressor_refuses_maps_it_cannot_connect():
    from greenlib.distill.modules import ConvRegressor

    pair = distill.make_pair("resnet8", "resnet8", torch.arange(NUM_CLASSES), NUM_CLASSES)
    with pytest.raises(distill.IncompatiblePairError, match="no regressor maps a 4x4 student map onto a 16x16"):
        ConvRegressor((16, 4, 4), (16, 16, 16), relu=True, pair=pair, method="FitNet")


def test_check_plan_lists_every_incompatible_combination():
    distill.check_plan([(TEACHER, STUDENT)], NAMES)  # all 13 connect resnet14 -> resnet8
    with pytest.raises(distill.IncompatiblePairError, match=r"^2 incompatible .*AT cannot.*FSP cannot"):
        distill.check_plan([("vgg8", "resnet8")], ["KD", "AT", "FSP"])
    with pytest.raises(ValueError, match="unknown distillation method"):
        distill.check_plan([(TEACHER, STUDENT)], ["KD", "nope"])


def test_hyperparameter_names_are_distinct_from_the_run_config_keys():
    cfg = config.resolve("distillation", profile="smoke")
    base = set(distill.distill_config(cfg, TEACHER, STUDENT, "SP", 0)) | {"hardware", "teacher_run_id"}
    for cls in distill.DISTILLERS.values():
        assert not (set(cls.defaults) - {"ce_weight", "loss_weight"}) & base, cls.name


def test_repdistiller_defaults():
    weights = {"KD": 0.9, "FitNet": 100, "AT": 1000, "SP": 3000, "CC": 0.02, "VID": 1, "RKD": 1, "PKT": 30000,
               "AB": 1, "FT": 200, "FSP": 50, "NST": 50, "CRD": 0.8}
    for name, cls in distill.DISTILLERS.items():
        assert cls.defaults["loss_weight"] == weights[name], name
        assert cls.defaults["ce_weight"] == (0.1 if name == "KD" else 1.0), name
    assert distill.get("KD").defaults["temperature"] == 4
    assert [n for n, c in distill.DISTILLERS.items() if c.pretrains] == ["AB", "FT", "FSP"]
    cfg = config.resolve("distillation", profile="paper")
    t = distill.student_train_config(cfg, "resnet20")
    assert (t.epochs, t.lr, t.momentum, t.weight_decay, cfg.batch_size) == (240, 0.05, 0.9, 5e-4, 64)
    assert [round(m * 240) for m in t.milestones] == [150, 180, 210] and t.schedule == "step"
    assert distill.student_train_config(cfg, "shufflenetv2").lr == 0.01
    assert distill.pretrain_epochs(240) == 30 and distill.pretrain_epochs(2) == 1
    ft = distill.get("FT")
    assert ft.pretrain_lr("resnet20", 0.05) == 0.01 and ft.pretrain_lr("vgg8", 0.05) == 0.05


def _lrs(t, epochs):
    from greenlib.train import lr_at

    return {e: lr_at(e, t.epochs, t.lr, t.schedule, t.milestones, t.gamma) for e in epochs}


def test_teachers_follow_repdistillers_train_teacher_recipe():
    # train_teacher.py: SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, x0.1 after 150, 180, 210 of
    # 240 (helper/util.py adjust_learning_rate: 1-based epoch > 150, i.e. 0-based epoch 150 on)
    cfg = config.resolve("distillation", profile="paper")
    t = distill.teacher_train_config(cfg, "resnet56")
    assert (t.epochs, t.lr, t.momentum, t.weight_decay, t.schedule) == (240, 0.05, 0.9, 5e-4, "step")
    lrs = _lrs(t, (0, 149, 150, 179, 180, 209, 210, 239))
    assert lrs == pytest.approx({0: 0.05, 149: 0.05, 150: 5e-3, 179: 5e-3, 180: 5e-4, 209: 5e-4, 210: 5e-5,
                                 239: 5e-5})
    assert distill.teacher_train_config(cfg, "shufflenetv1").lr == 0.01  # train_teacher.py lines 54-56
    c = distill.teacher_config(cfg, "resnet56", 0)
    assert c["kind"] == "teacher" and c["batch_size"] == 64 and c["milestones"] == [0.625, 0.75, 0.875]
    # a quick profile keeps the shape: milestones are fractions of teacher_epochs
    short = distill.teacher_train_config(config.resolve("distillation", profile="smoke", teacher_epochs=8), "vgg13")
    assert list(_lrs(short, range(8)).values()) == pytest.approx([0.05] * 5 + [5e-3, 5e-4, 5e-5])


def test_students_keep_repdistillers_train_student_recipe():
    # train_student.py: the same lr 0.05 and 150/180/210 of 240 as the teachers
    cfg = config.resolve("distillation", profile="paper")
    s, t = distill.student_train_config(cfg, "resnet20"), distill.teacher_train_config(cfg, "resnet56")
    assert (s.lr, s.milestones, s.gamma, s.momentum, s.weight_decay) == (t.lr, t.milestones, t.gamma, t.momentum,
                                                                         t.weight_decay)


def test_parse_pairs():
    assert distill.parse_pairs(["resnet56:resnet20", "vgg13:vgg8"]) == [("resnet56", "resnet20"), ("vgg13", "vgg8")]
    with pytest.raises(config.ConfigError, match="'resnet56-resnet20' is not 'teacher:student'"):
        distill.parse_pairs(["resnet56-resnet20"])
    with pytest.raises(config.ConfigError, match="'resnet57' in 'resnet57:resnet20' is not a zoo model"):
        distill.parse_pairs(["resnet57:resnet20"])


# --- the losses on a toy batch ------------------------------------------------------------------

class _Batches:  # what IndexedLoader offers the loss: the batch's training-set positions
    index = torch.arange(8)


@pytest.fixture(scope="module")
def toy():
    torch.manual_seed(0)
    labels = torch.randint(0, NUM_CLASSES, (64,))
    return torch.randn(8, 3, 32, 32), labels[:8], labels


def _phases(d):
    return (["pretrain"] if d.pretrains else []) + (["distillation"] if d.distills else [])


def _method_loss(d, student, teacher, x, phase):
    feats, logits = student.extract(x, preact=d.preact)
    with torch.no_grad():
        t_feats, t_logits = teacher.extract(x, preact=d.preact)
    s, t = Outputs(feats, logits, _Batches.index), Outputs(t_feats, t_logits, _Batches.index)
    return d.pretrain_loss(s, t) if phase == "pretrain" else d(s, t)


@pytest.mark.parametrize("method", NAMES)
def test_loss_is_finite_and_its_gradients_reach_the_student_never_the_teacher(method, toy):
    x, y, labels = toy
    torch.manual_seed(1)
    teacher = build_model(TEACHER, NUM_CLASSES).eval()  # parameters still require grad: nothing may reach them
    student = build_model(STUDENT, NUM_CLASSES)
    d = distill.build(method, TEACHER, STUDENT, labels, NUM_CLASSES)
    for phase in _phases(d):
        # the method's own loss: finite, and it moves the student (FT's pre-training: its paraphraser only)
        student.zero_grad(), d.zero_grad()
        loss = _method_loss(d, student, teacher, x, phase)
        assert loss.ndim == 0 and torch.isfinite(loss), (method, phase)
        loss.backward()
        trained = d.paraphraser if (phase == "pretrain" and not d.pretrains_student) else student.feature_modules()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained.parameters()), (method, phase)
        # the trainer's closure: the teacher runs without gradients
        student.zero_grad(), d.zero_grad()
        total, logits = distill.make_loss_fn(d, teacher, _Batches, pretrain=phase == "pretrain")(student, x, y)
        total.backward()
        assert torch.isfinite(total) and logits.shape == (8, NUM_CLASSES)
        assert all(p.grad is None for p in teacher.parameters()), (method, phase)
        student.train()
    assert _phases(d), method


@pytest.mark.parametrize("method", NAMES)
def test_loss_decreases_over_a_few_steps(method, toy):
    x, _, labels = toy
    torch.manual_seed(2)
    teacher = build_model(TEACHER, NUM_CLASSES).eval()
    for phase in _phases(distill.get(method)):
        student = build_model(STUDENT, NUM_CLASSES)
        d = distill.build(method, TEACHER, STUDENT, labels, NUM_CLASSES)
        opt = torch.optim.Adam([*student.parameters(), *d.parameters()], lr=3e-4)
        losses = []
        for _ in range(6):
            opt.zero_grad()
            loss = _method_loss(d, student, teacher, x, phase)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0], (method, phase, losses)


def test_a_distillers_modules_are_drawn_the_same_whether_or_not_the_shapes_were_cached():
    from greenlib.distill import registry
    labels = torch.arange(NUM_CLASSES).repeat(4)
    states = []
    for cached in (False, True):
        if not cached:
            registry.feature_shapes.cache_clear()  # a grid job's first build: the shapes' throw-away model
        torch.manual_seed(0)
        states.append(distill.build("CRD", TEACHER, STUDENT, labels, NUM_CLASSES).state_dict())
        states.append(torch.rand(3))  # and the caller's random state after it
    assert all(torch.equal(states[0][k], states[2][k]) for k in states[0])
    assert torch.equal(states[1], states[3])


def test_crd_draws_negatives_from_other_classes_and_updates_its_memory(toy):
    _, _, labels = toy
    d = distill.build("CRD", TEACHER, STUDENT, labels, NUM_CLASSES)
    assert d.hparams["nce_k"] == 63  # capped at the training set's size minus one
    index = torch.arange(8)
    idx = d.memory.sample(index)
    assert idx.shape == (8, 64) and torch.equal(idx[:, 0], index)
    assert (labels[idx[:, 1:]] != labels[index, None]).all()
    before = d.memory.memory_s.clone()
    student, teacher = build_model(STUDENT, NUM_CLASSES), build_model(TEACHER, NUM_CLASSES).eval()
    x = torch.randn(8, 3, 32, 32)
    (s_feats, s_logits), (t_feats, t_logits) = student.extract(x), teacher.extract(x)
    d(Outputs(s_feats, s_logits, index), Outputs(t_feats, t_logits, index)).backward()
    changed = (d.memory.memory_s != before).any(1)
    assert changed[:8].all() and not changed[8:].any() and (d.memory.z_s > 0)
    assert torch.allclose(d.memory.memory_s[:8].norm(dim=1), torch.ones(8))
    with pytest.raises(ValueError, match="CRD needs the batch's training-set indices"):
        d(Outputs([torch.zeros(2, 64)], torch.zeros(2, 10)), Outputs([torch.zeros(2, 64)], torch.zeros(2, 10)))


@pytest.mark.parametrize("kind", ["gpu", "dataloader"])
def test_indexed_loader_knows_each_batch_positions(kind):
    ds = make_synthetic(seed=0, n_train=100, n_test=10)
    make = GPULoader if kind == "gpu" else TorchvisionLoader
    extra = {} if kind == "gpu" else {"num_workers": 0}
    loader = distill.IndexedLoader(make(ds.train_x, ds.train_y, 32, "cpu", True, ds.mean, ds.std, seed=3, **extra))
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        seen, addresses = [], set()
        for _, y in loader:
            assert torch.equal(y, ds.train_y[loader.index])
            seen.append(loader.index.clone())  # a view of the loader's buffer: the next batch overwrites it
            addresses.add(loader.index.data_ptr())
        assert sorted(torch.cat(seen).tolist()) == list(range(100))
        assert len(addresses) == 1  # one buffer for every batch: what a CUDA graph captured reads each replay
    with pytest.raises(ValueError, match="wraps a training loader"):
        distill.IndexedLoader(make(ds.test_x, ds.test_y, 5, "cpu", False, ds.mean, ds.std, **extra))


# --- a run end to end ---------------------------------------------------------------------------

def _ctx(**kw):
    cfg = config.resolve("distillation", profile="smoke", pairs=[f"{TEACHER}:{STUDENT}"], methods=["KD", "FT"],
                         train_size=64, test_size=32, batch_size=32, iec_batch_size=16, iec_min_seconds=0.05, **kw)
    return experiments.prepare(cfg)


@pytest.fixture(scope="module")
def ctx():
    return _ctx(iec_shared=False)


@pytest.fixture(scope="module")
def runs(ctx):
    calls = []
    real = experiments.train_and_measure

    def counting(*a, **k):
        calls.append(a[1].config["model"])
        return real(*a, **k)

    experiments.train_and_measure = counting
    try:
        out = {m: distill.run_distillation(ctx, TEACHER, STUDENT, m, seed=0, progress=False) for m in ("KD", "FT")}
    finally:
        experiments.train_and_measure = real
    return out, calls


def test_run_writes_a_complete_folder_and_accounts_tec_as_teacher_plus_pretrain_plus_distill(ctx, runs):
    results, teacher_trainings = runs
    assert teacher_trainings == [TEACHER]  # trained once, then a cache hit for the second method
    assert results["KD"]["config"]["teacher_run_id"] == results["FT"]["config"]["teacher_run_id"]
    teacher = json.loads((ctx.store.root / results["KD"]["config"]["teacher_run_id"] / "result.json").read_text())
    assert teacher["config"]["kind"] == "teacher" and teacher["config"]["epochs"] == ctx.cfg.teacher_epochs
    assert teacher["config"]["batch_size"] == 64 != ctx.cfg.batch_size and teacher["config"]["lr"] == 0.05
    for method, res in results.items():
        folder = ctx.store.root / res["run_id"]
        for name in ("config.json", "environment.json", "metrics.json", "result.json", "model.pt",
                     "stages/distillation.json", "stages/inference.json", "traces/distillation.csv.gz"):
            assert (folder / name).exists(), (method, name)
        assert not list(folder.glob("*checkpoint.pt"))
        m, st = res["metrics"], res["stages"]
        pre = st["pretrain"]["energy_wh"] if "pretrain" in st else 0.0
        assert ("pretrain" in st) == (method == "FT") and m["tec_pretrain_wh"] == pre
        assert m["tec_teacher_wh"] == teacher["metrics"]["tec_wh"] == teacher["stages"]["teacher_training"]["energy_wh"]
        assert m["tec_distill_wh"] == st["distillation"]["energy_wh"]
        assert m["tec_wh"] == pytest.approx(m["tec_teacher_wh"] + pre + m["tec_distill_wh"])
        assert m["tec_wh"] > m["tec_teacher_wh"] > 0 and m["iec_wh"] > 0 and 0 <= m["acc"] <= 1
        assert m["teacher_acc"] == teacher["metrics"]["acc"]
        assert m["teacher_weights_acc"] == m["teacher_acc"]  # the stored weights, measured again: the same
        assert res["config"]["kind"] == "distillation" and res["config"]["method"] == method
    assert results["FT"]["config"]["pretrain_epochs"] == 1 and results["FT"]["config"]["factor_rate"] == 0.5


def test_complete_run_is_a_cache_hit_without_touching_the_teacher(ctx, runs, monkeypatch):
    results, _ = runs

    def boom(*a, **k):
        raise AssertionError("a cached run was recomputed")

    monkeypatch.setattr(distill.teacher, "teacher_model", boom)
    monkeypatch.setattr(distill.teacher, "run_teacher", boom)
    monkeypatch.setattr(distill.run, "_distill_and_measure", boom)
    assert distill.run_distillation(ctx, TEACHER, STUDENT, "KD", seed=0, progress=False) == results["KD"]
    stored = distill.stored_distillations(ctx.cfg)
    assert sorted(stored["method"]) == ["FT", "KD"]
    other = config.resolve("distillation", **{**ctx.cfg.to_dict(), "student_epochs": 2})
    assert distill.stored_distillations(other).empty


def test_teacher_run_id_is_the_one_run_teacher_stores(ctx, runs):
    _, res = distill.teacher_model(ctx, TEACHER, 0, progress=False)
    assert distill.teacher_run_id(ctx, TEACHER, 0) == res["run_id"]


def test_a_teacher_trains_at_batch_64_with_the_recipes_lr_per_epoch(monkeypatch):
    ctx = _ctx(teacher_epochs=8)  # milestones at epochs 5, 6, 7 (0.625, 0.75, 0.875 of 8)
    batches = []
    real = experiments.make_loaders

    def spy(ds, kind, batch_size, *a, **k):
        batches.append(batch_size)
        return real(ds, kind, batch_size, *a, **k)

    monkeypatch.setattr(experiments, "make_loaders", spy)
    res = distill.run_teacher(ctx, "resnet8", seed=0, progress=False)
    assert batches == [64] and ctx.cfg.batch_size == 32
    epochs = res["stages"]["teacher_training"]["epochs"]
    assert [e["lr"] for e in epochs] == pytest.approx([0.05] * 5 + [5e-3, 5e-4, 5e-5])
    assert all(e["images"] == 64 for e in epochs)
    # stored and shared: a second call is the same run; lost weights are regenerated, the measurement kept
    (ctx.store.root / res["run_id"] / "model.pt").unlink()
    with pytest.warns(UserWarning, match="no stored weights; regenerating them"):
        model, again = distill.teacher_model(ctx, "resnet8", 0, progress=False)
    assert again == res and not model.training and (ctx.store.root / res["run_id"] / "model.pt").exists()


def test_unknown_method_and_incompatible_pair_fail_before_training(ctx, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("trained before checking")

    monkeypatch.setattr(distill.teacher, "teacher_model", boom)
    before = sorted(p.name for p in ctx.store.root.iterdir()) if ctx.store.root.exists() else []
    with pytest.raises(ValueError, match="unknown distillation method 'Foo'"):
        distill.run_distillation(ctx, TEACHER, STUDENT, "Foo", seed=0)
    with pytest.raises(distill.IncompatiblePairError, match="FSP cannot distil wrn-16-2 -> resnet8"):
        distill.run_distillation(ctx, "wrn-16-2", STUDENT, "FSP", seed=0)
    after = sorted(p.name for p in ctx.store.root.iterdir()) if ctx.store.root.exists() else []
    assert after == before  # no run folder opened


def test_shared_iec_is_measured_once_per_student_architecture(runs):
    ctx = _ctx(iec_shared=True)
    a = distill.run_distillation(ctx, TEACHER, STUDENT, "KD", seed=0, progress=False)
    b = distill.run_distillation(ctx, TEACHER, STUDENT, "SP", seed=0, progress=False)
    assert a["metrics"]["iec_run_id"] == b["metrics"]["iec_run_id"]
    assert a["metrics"]["iec_wh"] == b["metrics"]["iec_wh"] > 0
    assert "inference" not in a["stages"] and a["config"]["iec_shared"] is True
    iec = json.loads((ctx.store.root / a["metrics"]["iec_run_id"] / "result.json").read_text())
    assert iec["config"]["kind"] == "iec" and iec["config"]["model"] == STUDENT and "inference" in iec["stages"]


def test_a_student_records_how_good_the_teacher_weights_it_learned_from_are(ctx, runs):
    # weights lost and trained again are not the measured run's: the student measures the ones it got
    t_id = runs[0]["KD"]["config"]["teacher_run_id"]
    weights = ctx.store.root / t_id / "model.pt"
    kept = weights.read_bytes()
    net = build_model(TEACHER, num_classes=ctx.dataset.num_classes)
    net.load_state_dict(torch.load(weights, weights_only=True))
    for t in net.state_dict().values():
        if t.is_floating_point():
            t.zero_()  # every logit 0: class 0 everywhere
    torch.save(net.state_dict(), weights)
    try:
        res = distill.run_distillation(ctx, TEACHER, STUDENT, "AT", seed=0, progress=False)
    finally:
        weights.write_bytes(kept)
    _, test_loader = ctx.loaders(0)
    labels = torch.cat([y for _, y in test_loader])
    assert res["metrics"]["teacher_weights_acc"] == float((labels == 0).float().mean())
    assert res["metrics"]["teacher_acc"] == runs[0]["KD"]["metrics"]["teacher_acc"]  # the run's, as stored
    table = tables.teacher_table(distill.stored_teachers(ctx.cfg), distill.stored_distillations(
        config.resolve("distillation", **{**ctx.cfg.to_dict(), "methods": ["KD", "FT", "AT"]})))
    row = table[table["run_id"] == t_id].iloc[0]
    mean = (2 * runs[0]["KD"]["metrics"]["teacher_acc"] + res["metrics"]["teacher_weights_acc"]) / 3
    assert row["weights_acc_percent"] == round(100 * mean, 2)


def test_measuring_the_teacher_leaves_the_students_training_as_it_was(tmp_path, monkeypatch):
    real = distill.run.evaluate

    def drawing(*a, **k):  # a loader that draws from the random state, as worker processes' seeds do
        torch.rand(1)
        return real(*a, **k)

    monkeypatch.setattr(distill.run, "evaluate", drawing)
    weights = []
    for measured in (True, False):
        monkeypatch.setenv("GREENLIB_DATA", str(tmp_path / str(measured)))
        if not measured:
            monkeypatch.setattr(distill.run, "teacher_weights_accuracy", lambda *a: 0.0)
        c = _ctx(iec_shared=False)
        res = distill.run_distillation(c, TEACHER, STUDENT, "CRD", seed=0, progress=False)  # draws negatives
        weights.append(torch.load(c.store.root / res["run_id"] / "model.pt", weights_only=True))
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_tables_carry_both_accuracies_and_choose_one(ctx, runs):
    assert tables.cited_accuracy("resnet56", "resnet20", "CRD") == pytest.approx(0.7116)
    assert tables.cited_accuracy("resnet14", "resnet8", "CRD") != tables.cited_accuracy("resnet14", "resnet8", "CRD")
    stored = distill.stored_distillations(ctx.cfg)
    measured = tables.distillation_table(stored, "measured")
    assert list(measured["label"]) == [f"{m} {TEACHER}→{STUDENT}" for m in stored["method"]]
    assert (measured["acc_percent"] == measured["acc_measured_percent"]).all() and measured["G(500M)"].ge(0).all()
    cited = tables.distillation_table(stored, "cited")
    assert cited["acc_percent"].isna().all() and tables.plottable(cited).empty  # the CRD paper has no resnet14
    assert cited["acc_source"].iloc[0].startswith("cited (CRD paper")
    with pytest.raises(ValueError, match="acc_source='ours'; accepted: measured, cited"):
        tables.with_accuracy(stored, "ours")
    stages = tables.stage_table(stored, ctx.cfg.profile)
    assert list(stages["method"]).count("(teacher)") == 1  # one teacher run behind both methods
    assert set(stages["stage"]) == {"teacher_training", "pretrain", "distillation", "inference"}
    pub = tables.published_rows()
    assert set(zip(pub["teacher"], pub["student"], pub["method"])) == {
        ("vgg13", "vgg8", "CRD"), ("vgg13", "vgg8", "KD"), ("resnet56", "resnet20", "CRD"),
        ("resnet56", "resnet20", "KD")}


def test_teacher_table_lists_every_stored_teacher_beside_the_crd_papers(ctx, runs):
    assert tables.cited_teacher_accuracy("resnet56") == pytest.approx(0.7234)
    assert tables.cited_teacher_accuracy("vgg13") == pytest.approx(0.7464)
    assert tables.cited_teacher_accuracy(TEACHER) != tables.cited_teacher_accuracy(TEACHER)  # not in the CRD paper
    distill.run_teacher(ctx, STUDENT, seed=0, progress=False)  # a teacher no student was distilled from
    cfg = config.resolve("distillation", **{**ctx.cfg.to_dict(), "pairs": [f"{TEACHER}:{STUDENT}", f"{STUDENT}:resnet8"]})
    stored = distill.stored_teachers(cfg)
    table = tables.teacher_table(stored, distill.stored_distillations(cfg))
    assert list(table["teacher"]) == [TEACHER, STUDENT] and list(table["students"]) == [2, 0]  # sorted by name
    kd = runs[0]["KD"]
    row = table[table["teacher"] == TEACHER].iloc[0]
    assert row["run_id"] == kd["config"]["teacher_run_id"]
    assert row["acc_percent"] == pytest.approx(100 * kd["metrics"]["teacher_acc"], abs=0.005)
    assert row["tec_wh"] == kd["metrics"]["tec_teacher_wh"] and row["epochs"] == ctx.cfg.teacher_epochs
    assert distill.stored_teachers(config.resolve("distillation", **{**cfg.to_dict(), "teacher_epochs": 3})).empty
    assert tables.teacher_table(stored.iloc[0:0], stored.iloc[0:0]).empty


def test_rkd_distances_are_divided_by_the_mean_positive_distance_without_a_boolean_mask():
    # the mask form d[d > 0].mean() syncs the host (a data-dependent size) and cannot be captured in a CUDA graph
    from greenlib.distill.rkd import normalised_distances, pairwise_distances

    e = torch.randn(16, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    d = pairwise_distances(e)
    assert torch.allclose(normalised_distances(e), d / d[d > 0].mean(), rtol=1e-12)
    assert float(normalised_distances(e).diagonal().abs().max()) == 0.0
