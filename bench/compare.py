#!/usr/bin/env python3
"""bench/compare.py — the Python half of bench/compare.sh (read that first).

  compare.py train MODEL MODE EPOCHS BATCHES THREADS OUT.json [ROOTDIR]
      trains examples/fashion_MODEL.ltl's model in PyTorch (MODE: eager, compile, lightning),
      at most BATCHES batches an epoch (0: all), tests it, writes {first_step_s, samples_per_s, test_acc, epochs_run} to OUT.json
  compare.py ltl MODEL BATCHES RUNDIR OUT.json
      the same figures for an `ltlc run ... fit test` run, from its metrics.csv and TensorBoard file
  compare.py measure OUT.json LOG TIMEOUT_S CMD...
      runs CMD (output to LOG) and writes its exit status, wall time and peak RSS to OUT.json;
      the command finds its start time in $BENCH_T0
  compare.py row FRAMEWORK MODEL EPOCHS FIT.json FIGS.json [FIRST.json] >> RESULTS.jsonl
      one result row: the figures, the peak RSS of the fit run, the wall time of FIRST's run as
      the time to the first step when the figures lack it
  compare.py table RESULTS.jsonl HEADER.md FOOTER.md OUT.md
      the Markdown table (ratios against LTL) to stdout and OUT.md

The models mirror examples/fashion_mlp.ltl and examples/fashion_cnn.ltl: same layers and
PyTorch-default initialisation, Adam 1e-3, batch 64, seed 42, 55 000 / 5 000 split, the same
normalisation, dropout, flip augmentation, cosine schedule and early stopping. `ltl` and `table`
need only the standard library (they run without the virtual environment).
"""
import csv, glob, gzip, json, math, os, resource, struct, subprocess, sys, time

ROOT = "/usr/share/datasets/fashion-mnist"
BATCH = 64
LOG_EVERY = 50          # Lightning's (and LTL's) log_every_n_steps: the timing windows
NTRAIN = 55_000
# steps per training epoch: the MLP keeps the last, short batch; the CNN's loader drops it
STEPS = {"mlp": math.ceil(NTRAIN / BATCH), "cnn": NTRAIN // BATCH}


def steps_per_epoch(model, batches):
    return min(int(batches), STEPS[model]) if int(batches) > 0 else STEPS[model]


def steady_rate(marks, spe):
    """Training samples/s from (global_step, time) marks taken every LOG_EVERY steps: only
    windows inside one epoch (no validation, no epoch-end work, no short last batch) count, and
    the first window starts after LOG_EVERY steps of warm-up (compilation, first touches)."""
    n = t = 0.0
    for (s1, t1), (s2, t2) in zip(marks, marks[1:]):
        if s1 // spe == s2 // spe and s2 % spe != spe - 1:
            n += (s2 - s1) * BATCH
            t += t2 - t1
    return n / t if t > 0 else None


# ---- LTL: figures from the run folder ------------------------------------------------------

def varint(buf, i):
    """The protobuf varint at buf[i]: (value, index after it)."""
    v = shift = 0
    while True:
        b = buf[i]; i += 1
        v |= (b & 0x7F) << shift; shift += 7
        if b < 0x80: return v, i


def pb_fields(buf):
    """(field number, wire type, value) of one protobuf message (varint, 64-bit, bytes only)."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = varint(buf, i)
        elif wt == 1:
            v = struct.unpack_from("<d", buf, i)[0]; i += 8
        elif wt == 2:
            n, i = varint(buf, i)
            v = buf[i:i + n]; i += n
        elif wt == 5:
            v = buf[i:i + 4]; i += 4
        else:
            raise ValueError("unsupported protobuf wire type %d" % wt)
        yield num, wt, v


def tb_marks(path, tag=b"train_loss"):
    """(step, wall time) of every `tag` scalar in a TensorBoard event file (TFRecord framing:
    length, its CRC, the Event, its CRC). The wall time is taken when the row is logged."""
    data, i, out = open(path, "rb").read(), 0, []
    while i + 12 <= len(data):
        n = struct.unpack_from("<Q", data, i)[0]
        ev = data[i + 12:i + 12 + n]
        i += 16 + n
        wall, step, tags = None, 0, []
        for num, _, v in pb_fields(ev):
            if num == 1: wall = v
            elif num == 2: step = v
            elif num == 5:
                tags += [t for f, _, val in pb_fields(v) if f == 1
                         for g, _, t in pb_fields(val) if g == 1]
        if tag in tags:
            out.append((step, wall))
    return out


def ltl(model, batches, rundir, out):
    rows = list(csv.DictReader(open(os.path.join(rundir, "metrics.csv"))))
    acc = [float(r["test_acc"]) for r in rows if r.get("test_acc")]
    epochs = 1 + max(int(r["epoch"]) for r in rows if r.get("train_loss"))
    ev = glob.glob(os.path.join(rundir, "events.out.tfevents.*"))
    res = {"samples_per_s": steady_rate(tb_marks(ev[0]), steps_per_epoch(model, batches)) if ev else None,
           "test_acc": acc[-1] if acc else None, "epochs_run": epochs}
    with open(out, "w") as fh: json.dump(res, fh)


# ---- PyTorch -------------------------------------------------------------------------------

def train(model, mode, epochs, batches, threads, out, rootdir="."):
    t0 = float(os.environ.get("BENCH_T0", time.time()))   # set by `measure` just before the start
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(threads)

    def read_idx(path):
        raw = gzip.open(path, "rb").read()
        nd = raw[3]
        dims = struct.unpack(">" + "I" * nd, raw[4:4 + 4 * nd])
        return torch.frombuffer(bytearray(raw[4 + 4 * nd:]), dtype=torch.uint8).reshape(dims)

    class Batches(torch.utils.data.Dataset):
        """Whole batches from a BatchSampler: one indexing operation a batch, normalised (and
        flipped) per batch like LTL's loader transform; no worker processes needed."""
        def __init__(s, x, y, flip=False): s.x, s.y, s.flip = x, y, flip
        def __len__(s): return len(s.y)
        def __getitem__(s, idx):
            idx = torch.as_tensor(idx)
            x = s.x[idx].unsqueeze(1).float()
            if s.flip:   # hflip(x, p = 0.5), per image
                x = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, x.flip(-1), x)
            return (x / 255 - 0.2860) / 0.3530, s.y[idx].long()

    def loader(ds, shuffle, drop_last=False):
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
        sampler = RandomSampler(ds) if shuffle else SequentialSampler(ds)
        return DataLoader(ds, sampler=BatchSampler(sampler, BATCH, drop_last), batch_size=None)

    class MLP(nn.Module):
        def __init__(s):
            super().__init__()
            s.l1, s.l2, s.l3 = nn.Linear(28 * 28, 128), nn.Linear(128, 256), nn.Linear(256, 10)
        def forward(s, x):
            h = F.relu(s.l1(x.flatten(1)))
            h = F.relu(s.l2(h))
            return F.log_softmax(s.l3(h), dim=1)

    class CNN(nn.Module):
        def __init__(s):
            super().__init__()
            s.conv1, s.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
            s.fc1, s.fc2 = nn.Linear(64 * 12 * 12, 128), nn.Linear(128, 10)
        def forward(s, x):
            h = F.relu(s.conv1(x))
            h = F.max_pool2d(F.relu(s.conv2(h)), 2)
            h = F.dropout(h.flatten(1), 0.25, s.training)
            h = F.dropout(F.relu(s.fc1(h)), 0.5, s.training)
            return s.fc2(h)

    cnn = model == "cnn"
    loss_fn = F.cross_entropy if cnn else F.nll_loss
    torch.manual_seed(42)
    xs, ys = read_idx(ROOT + "/train-images-idx3-ubyte.gz"), read_idx(ROOT + "/train-labels-idx1-ubyte.gz")
    perm = torch.randperm(len(ys), generator=torch.Generator().manual_seed(42))
    tr, va = perm[:NTRAIN], perm[NTRAIN:]
    train_dl = loader(Batches(xs[tr], ys[tr], flip=cnn), True, drop_last=cnn)
    val_dl = loader(Batches(xs[va], ys[va]), False)
    test_dl = loader(Batches(read_idx(ROOT + "/t10k-images-idx3-ubyte.gz"),
                             read_idx(ROOT + "/t10k-labels-idx1-ubyte.gz")), False)
    net = CNN() if cnn else MLP()

    first, marks = [None], []
    def on_step(step, loss):   # after each optimizer step
        if first[0] is None:
            first[0] = time.time() - t0
        if (step + 1) % LOG_EVERY == 0:
            loss.item()   # what logging train_loss costs
            marks.append((step, time.perf_counter()))

    def accuracy(logits, y): return (logits.argmax(1) == y).float().mean()

    if mode == "lightning":
        import lightning as L
        from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        class Lit(L.LightningModule):
            def __init__(s): super().__init__(); s.net = net
            def training_step(s, b, i):
                loss = loss_fn(s.net(b[0]), b[1])
                s.log("train_loss", loss, prog_bar=True)
                return loss
            def validation_step(s, b, i):
                logits = s.net(b[0])
                s.log("val_loss", loss_fn(logits, b[1]))
                s.log("val_acc", accuracy(logits, b[1]), prog_bar=True)
            def test_step(s, b, i): s.log("test_acc", accuracy(s.net(b[0]), b[1]))
            def configure_optimizers(s):
                opt = torch.optim.Adam(s.parameters(), lr=1e-3)
                if not cnn: return opt
                return {"optimizer": opt, "lr_scheduler": {
                    "scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10), "interval": "epoch"}}

        class Marks(L.Callback):
            def on_train_batch_end(s, trainer, pl_module, outputs, batch, batch_idx):
                on_step(trainer.global_step - 1, outputs["loss"])

        L.seed_everything(42, verbose=False)
        if cnn:
            cbs = [ModelCheckpoint(monitor="val_acc", mode="max", save_top_k=1, save_last=True),
                   LearningRateMonitor(logging_interval="epoch")]
        else:
            cbs = [EarlyStopping(monitor="val_loss", patience=3),
                   ModelCheckpoint(monitor="val_acc", mode="max", save_top_k=2)]
        trainer = L.Trainer(max_epochs=epochs, limit_train_batches=batches or 1.0,
                            accelerator="cpu", devices=1, precision="32-true",
                            callbacks=cbs + [Marks()], default_root_dir=rootdir,
                            logger=[CSVLogger(rootdir), TensorBoardLogger(rootdir)])
        lit = Lit()
        trainer.fit(lit, train_dl, val_dl)
        test_acc = trainer.test(lit, test_dl, verbose=False)[0]["test_acc"]
        epochs_run = trainer.current_epoch
    else:
        fwd = torch.compile(net) if mode == "compile" else net
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10) if cnn else None

        @torch.no_grad()
        def evaluate(dl):
            fwd.eval()
            n = loss = correct = 0
            for x, y in dl:
                logits = fwd(x)
                loss += float(loss_fn(logits, y, reduction="sum"))
                correct += int((logits.argmax(1) == y).sum())
                n += len(y)
            fwd.train()
            return loss / n, correct / n

        best, wait, step, epochs_run = math.inf, 0, 0, 0
        for epoch in range(epochs):
            for i, (x, y) in enumerate(train_dl):
                if i == batches > 0: break
                loss = loss_fn(fwd(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                on_step(step, loss)
                step += 1
            epochs_run += 1
            val_loss, _ = evaluate(val_dl)
            if sched: sched.step()
            if not cnn:   # early_stopping(monitor = "val_loss", patience = 3), Lightning's rule
                if val_loss < best: best, wait = val_loss, 0
                else:
                    wait += 1
                    if wait >= 3: break
        test_acc = evaluate(test_dl)[1]

    with open(out, "w") as fh:
        json.dump({"first_step_s": first[0], "samples_per_s": steady_rate(marks, steps_per_epoch(model, batches)),
                   "test_acc": float(test_acc), "epochs_run": epochs_run}, fh)


# ---- processes and rows --------------------------------------------------------------------

def measure(out, log, timeout, *cmd):
    """Peak RSS from getrusage(RUSAGE_CHILDREN) after the wait: the largest resident set among
    the command and the children it waited for (torch.compile's compile workers)."""
    env = dict(os.environ, BENCH_T0=repr(time.time()))
    t = time.perf_counter()
    with open(log, "w") as lf:
        try:
            rc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=env, timeout=float(timeout)).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout after %s s" % timeout
        except OSError as e:
            rc = str(e)
    res = {"rc": rc, "wall_s": time.perf_counter() - t,
           "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}
    with open(out, "w") as fh: json.dump(res, fh)
    sys.exit(0 if rc == 0 else 1)


def row(framework, model, epochs, fit, figs, first=None):
    def load(p):
        try:
            with open(p) as fh: return json.load(fh)
        except (OSError, ValueError):
            return {}
    f, g = load(fit), load(figs)
    r = {"framework": framework, "model": model, "epochs": int(epochs)}
    if f.get("rc") != 0 or not g:
        rc = f.get("rc", "no result")
        why = "exit %s" % rc if isinstance(rc, int) else rc if rc != 0 else "no figures"
        r.update(ok=False, error="failed (%s): see %s" % (why, fit[:-5] + ".log"))
    else:
        r.update(g, ok=True, rss_kb=f["rss_kb"])
        if first:
            fr = load(first)
            r["first_step_s"] = fr["wall_s"] if fr.get("rc") == 0 else None
    print(json.dumps(r))


# ---- the table -----------------------------------------------------------------------------

NAMES = {"ltl": "LTL", "eager": "PyTorch eager", "compile": "torch.compile", "lightning": "PyTorch Lightning"}


def targets(model, base, by):
    """Issue 6's targets, met or not, in this run's figures."""
    if not base: return "Targets: no LTL figures in this run."
    out = []
    def check(what, value, ok, fmt):
        out.append("%s: %s (%s)" % (what, fmt % value, "met" if ok else "**not met**"))
    eager = by.get("eager", {})
    speed = lambda r: base["samples_per_s"] / r["samples_per_s"] if r.get("samples_per_s") and base.get("samples_per_s") else None
    if speed(eager):
        need = 5 if model == "mlp" else 2
        check("samples/s vs PyTorch eager (target >= %dx)" % need, speed(eager), speed(eager) >= need, "%.2fx")
    for fw in ("compile", "lightning"):
        if fw in by and speed(by[fw]):
            check("vs %s (target > 1x)" % NAMES[fw], speed(by[fw]), speed(by[fw]) > 1, "%.2fx")
    if base.get("first_step_s") is not None:
        check("first step (target <= 0.5 s)", base["first_step_s"], base["first_step_s"] <= 0.5, "%.2f s")
    if eager.get("rss_kb"):
        q = base["rss_kb"] / eager["rss_kb"]
        check("peak RSS / PyTorch eager's (target <= 0.5)", q, q <= 0.5, "%.2f")
    if eager.get("test_acc") is not None and base.get("test_acc") is not None:
        d = 100 * (base["test_acc"] - eager["test_acc"])
        check("accuracy vs PyTorch eager (target within 0.5 points)", d, abs(d) <= 0.5, "%+.2f points")
    return "Targets (issue 6), LTL: " + "; ".join(out) + "." if out else "Targets: no PyTorch figures in this run."


def table(jsonl, header, footer, md_out):
    rows = [json.loads(l) for l in open(jsonl) if l.strip()]
    L = [open(header).read().rstrip("\n")]
    L += ["", "Ratios are LTL's advantage measured in this run: **LTL x** = LTL's samples/s divided by "
          "this row's; **RSS / LTL** = this row's peak RSS divided by LTL's; **acc - LTL** = test "
          "accuracy difference in points.", ""]

    def f(v, fmt):
        return fmt % v if isinstance(v, (int, float)) and v is not None else "-"
    for model in ("mlp", "cnn"):
        mr = [r for r in rows if r["model"] == model]
        if not mr: continue
        base = next((r for r in mr if r["framework"] == "ltl" and r.get("ok")), None)
        title = {"mlp": "MLP 784-128-256-10", "cnn": "CNN conv32-conv64-maxpool-dropout-fc128-dropout-fc10"}[model]
        L += ["## %s (`examples/fashion_%s.ltl`), %s epoch(s)" % (title, model, mr[0]["epochs"]), "",
              "| framework | samples/s | LTL x | first step (s) | peak RSS (MiB) | RSS / LTL | test acc (%) | acc - LTL | epochs run |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in mr:
            if not r.get("ok"):
                L.append("| %s | %s | | | | | | | |" % (NAMES[r["framework"]], r.get("error", "failed")))
                continue
            sp, rss, acc = r.get("samples_per_s"), r.get("rss_kb"), r.get("test_acc")
            ratio = lambda a, b: a / b if a and b else None
            L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                NAMES[r["framework"]], f(sp, "%.0f"),
                f(ratio(base and base.get("samples_per_s"), sp), "%.2f"),
                f(r.get("first_step_s"), "%.2f"), f(rss and rss / 1024, "%.0f"),
                f(ratio(rss, base and base.get("rss_kb")), "%.2f"),
                f(acc and 100 * acc, "%.2f"),
                f(None if acc is None or not base or base.get("test_acc") is None else 100 * (acc - base["test_acc"]), "%+.2f"),
                r.get("epochs_run", "-")))
        L += ["", targets(model, base, {r["framework"]: r for r in mr if r.get("ok")}), ""]
    L.append(open(footer).read().rstrip("\n"))
    text = "\n".join(L) + "\n"
    sys.stdout.write(text)
    open(md_out, "w").write(text)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "train": train(args[0], args[1], int(args[2]), int(args[3]), int(args[4]), *args[5:])
    elif cmd == "ltl": ltl(*args)
    elif cmd == "measure": measure(*args)
    elif cmd == "row": row(*args)
    elif cmd == "table": table(*args)
    else: sys.exit("compare.py: unknown command %s (train, ltl, measure, row, table)" % cmd)
