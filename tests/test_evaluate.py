"""`bnmusic eval`: inputs, requests, FAD/KL maths, the report, and the blend claim."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from noise_signals import clacks

from bnmusic_bridge.audio import read_stem, write_audio
from bnmusic_bridge.errors import AudioInputError, ParameterError
from bnmusic_bridge.evaluation import (
    REPORT_FILES,
    EvalConfig,
    NoiseClip,
    ablation_table,
    discover_noises,
    evaluate,
    fad,
    find_embedding_model,
    frechet_distance,
    mean_kl,
    measure_result,
    method_request,
    normalise_loudness,
    read_prompts,
)
from bnmusic_bridge.frontends import cli
from bnmusic_bridge.loudness import integrated_lufs
from bnmusic_bridge.pipeline import render
from bnmusic_bridge.request import RenderRequest

RATE = 44_100


def song(seconds: float, beat_s: float = 0.37, seed: int = 0) -> np.ndarray:
    """A short stereo "random music" track unrelated to the clacks: a four-chord
    progression with bass, and kick / snare / hat on a 0.37 s beat (the clacks tick every
    0.5 s). Float32 ``(2, samples)``, peak 0.5."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    progression = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]
    out = np.zeros(n)
    bar_s = 4 * beat_s
    for k in range(int(np.ceil(seconds / bar_s))):
        seg = (t >= k * bar_s) & (t < (k + 1) * bar_s)
        local = t[seg] - k * bar_s
        env = np.minimum(1.0, local / 0.01) * np.exp(-local / 1.5)
        for note in (*progression[k % 4], progression[k % 4][0] - 24):
            f_hz = 440.0 * 2 ** ((note - 69) / 12)
            for h in range(1, 9):
                out[seg] += env * np.sin(2 * np.pi * f_hz * h * t[seg]) / h**1.5
    out *= 0.25 / np.abs(out).max()
    hit_len = int(0.2 * RATE)
    th = np.arange(hit_len) / RATE
    kick = 0.6 * np.sin(2 * np.pi * (50 * th + 1.8 * (1 - np.exp(-th / 0.03)))) * np.exp(-th / 0.08)
    for b, start_s in enumerate(np.arange(0.05, seconds, beat_s)):
        i = int(start_s * RATE)
        m = min(hit_len, n - i)
        hat = 0.15 * rng.standard_normal(hit_len) * np.exp(-th / 0.015)
        body = kick if b % 2 == 0 else 0.35 * rng.standard_normal(hit_len) * np.exp(-th / 0.05)
        out[i : i + m] += (hat + body)[:m]
    mono = (0.5 * out / np.abs(out).max()).astype(np.float32)
    return np.stack([mono, mono])


def band_noise(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.standard_normal(int(seconds * RATE)), np.ones(8) / 8, mode="same")
    return (0.3 * x / np.abs(x).max()).astype(np.float32)[None, :]


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, Path]:
    """One `bnmusic eval` over two clips in two category folders; riffusion-a2a asked for
    with a model folder that does not exist (so it must be skipped, on any machine)."""
    root = tmp_path_factory.mktemp("eval")
    write_audio(root / "noise" / "train" / "clacks.wav", clacks(3.0)[None, :], RATE)
    write_audio(root / "noise" / "hum" / "hum_a.wav", band_noise(2.0, seed=1), RATE)
    write_audio(root / "music" / "song.wav", song(6.0), RATE)
    (root / "prompts.txt").write_text("first prompt\n\n# a comment\nsecond prompt\n")
    out = root / "report"
    rc = cli.main(
        [
            "eval",
            str(root / "noise"),
            "--methods",
            "bnmusic,noise-only,random-music,riffusion-a2a",
            "--music-dir",
            str(root / "music"),
            "--prompts",
            str(root / "prompts.txt"),
            "--model",
            str(root / "no-such-model"),
            "--out",
            str(out),
            "-q",
        ]
    )
    return rc, out, root


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _table_after(markdown: str, heading: str) -> list[str]:
    """The Markdown table lines that follow the first ``heading`` line."""
    lines = markdown.splitlines()
    start = lines.index(heading) + 1
    while not lines[start].startswith("|"):
        start += 1
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_eval_writes_every_report_file_and_they_parse(eval_run: tuple[int, Path, Path]) -> None:
    rc, out, _ = eval_run
    assert rc == 0
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    for name in REPORT_FILES:
        if name.endswith(".png"):
            assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = _csv(out / "results.csv")
    assert len(rows) == 2 * 3 * 2  # clips x methods that ran x scenarios
    assert {r["method"] for r in rows} == {"bnmusic", "noise-only", "random-music"}
    assert {r["scenario"] for r in rows} == {"normalised", "direct"}
    assert {(r["clip"], r["category"]) for r in rows} == {("clacks", "train"), ("hum_a", "hum")}
    # Loudness as in the paper: every noise at -18 LUFS; the unity music matched to it.
    for r in rows:
        assert float(r["noise_lufs"]) == pytest.approx(-18.0, abs=0.2)
        if r["scenario"] == "normalised" and r["method"] != "noise-only":
            assert float(r["music_lu"]) == pytest.approx(0.0, abs=0.2)
    # Prompts cycle over the clips in input order (hum/ sorts before train/).
    prompts = {r["clip"]: r["prompt"] for r in rows}
    assert prompts == {"hum_a": "first prompt", "clacks": "second prompt"}
    silent = [r for r in rows if r["method"] == "noise-only"]
    assert all(r["music_lufs"] == "-inf" and r["lu_90_smr"] == "inf" for r in silent)

    table = _csv(out / "table1.csv")
    assert len(table) == 3 * 2 * 3  # categories (all, hum, train) x scenarios x methods
    ablation = _csv(out / "ablation.csv")
    assert len(ablation) == 3 * 6
    missing = [r for r in ablation if r["row"] == "outpainting only"]
    assert all(r["clips"] == "0" and "not in --methods" in r["note"] for r in missing)

    report = json.loads((out / "results.json").read_text())
    assert [s["method"] for s in report["skipped"]] == ["riffusion-a2a"]
    assert len(report["rows"]) == len(rows)


def test_report_markdown_lists_skips_fad_note_and_table_rows(
    eval_run: tuple[int, Path, Path],
) -> None:
    _, out, _ = eval_run
    md = (out / "report.md").read_text()
    assert "SKIPPED `riffusion-a2a`" in md
    assert "does not exist" in md  # why: the model folder is missing
    assert "FAD/KL: not computed" in md
    table = _table_after(md, "### Table 1, loudness normalised")
    assert len(table) == 2 + 3  # header, separator, one row per method that ran
    assert table[2].startswith("| BNMusic (full) | 2 |")
    noise_row = next(line for line in table if line.startswith("| noise only"))
    assert "unreachable" in noise_row and "silent" in noise_row
    assert len(_table_after(md, "### Ablation")) == 2 + 6
    assert "## Category `train` (1 clip)" in md


def test_eval_refuses_to_overwrite_without_force(
    eval_run: tuple[int, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, root = eval_run
    before = (out / "report.md").stat().st_mtime_ns
    rc = cli.main(["eval", str(root / "noise"), "--methods", "noise-only", "--out", str(out), "-q"])
    assert rc == cli.EXIT_ERROR
    assert "--force" in capsys.readouterr().err
    assert (out / "report.md").stat().st_mtime_ns == before


def test_full_method_beats_random_music_on_loudness_for_90_percent(
    eval_run: tuple[int, Path, Path],
) -> None:
    """On a periodic noise (wheel clacks), music aligned with the noise needs less
    loudness than unrelated music to mask 90 % of the high-energy bins."""
    _, out, _ = eval_run
    rows = {
        r["method"]: r
        for r in _csv(out / "results.csv")
        if r["clip"] == "clacks" and r["scenario"] == "normalised"
    }
    for model in ("smr", "spreading"):
        full = float(rows["bnmusic"][f"lu_90_{model}"])
        random = float(rows["random-music"][f"lu_90_{model}"])
        assert math.isfinite(full), model
        assert full < random, model
    assert float(rows["bnmusic"]["onset_f"]) > float(rows["random-music"]["onset_f"])


def test_real_train_full_method_beats_real_music(shared_data: Path, tmp_path: Path) -> None:
    """The real train recording against each real music excerpt (skips without them)."""
    music = sorted((shared_data / "music").glob("*.wav"))
    if not music:
        pytest.skip("no real music in shared data")
    stem = read_stem(shared_data / "noise" / "blanket_train_train.wav")
    noise, _, _ = normalise_loudness(stem.audio, stem.sample_rate_hz)
    mono = noise.mean(axis=0)
    clip = NoiseClip(Path("train.wav"), "train", "blanket")

    def lu90(request: RenderRequest) -> tuple[float, float]:
        result = render(noise, stem.sample_rate_hz, request)
        row = measure_result(result, mono, clip=clip, method=request.generator)[0]
        return row.lu_90_smr, row.lu_90_spreading

    full = lu90(RenderRequest())
    for path in music:
        folder = tmp_path / path.stem
        folder.mkdir()
        os.symlink(path, folder / path.name)
        other = lu90(
            RenderRequest(generator="random-music", generator_params={"music_dir": str(folder)})
        )
        assert full[0] < other[0], f"smr: full {full[0]:.1f} LU vs {path.name} {other[0]:.1f} LU"
        assert full[1] < other[1], (
            f"spreading: full {full[1]:.1f} LU vs {path.name} {other[1]:.1f} LU"
        )


def test_eval_rows_show_what_alignment_does(tmp_path: Path) -> None:
    """The producer's track raw vs fitted + aligned, and the full method with and
    without the alignment step, as rows of Table 1 and the ablation."""
    write_audio(tmp_path / "noise" / "clacks.wav", clacks(4.0)[None, :], RATE)
    write_audio(tmp_path / "mine.wav", song(8.0), RATE)
    methods = "bnmusic,bnmusic-unaligned,track-raw,track-aligned"
    out = tmp_path / "report"
    rc = cli.main(["eval", str(tmp_path / "noise"), "--methods", methods,
                   "--track", str(tmp_path / "mine.wav"), "--out", str(out), "-q"])  # fmt: skip
    assert rc == 0
    rows = {(r["method"], r["scenario"]): r for r in _csv(out / "table1.csv")}
    for method in methods.split(","):
        assert int(rows[(method, "normalised")]["clips"]) == 1, method
    ablation = {r["row"]: r for r in _csv(out / "ablation.csv")}
    assert int(ablation["full without the alignment step"]["clips"]) == 1
    results = {(r["method"], r["scenario"]): r for r in _csv(out / "results.csv")}
    # The alignment step moves the music toward the noise: more spectral alignment.
    for a, b in (("bnmusic", "bnmusic-unaligned"), ("track-aligned", "track-raw")):
        assert float(results[(a, "normalised")]["spectral_freq_r"]) > float(
            results[(b, "normalised")]["spectral_freq_r"]
        ), (a, b)
    # Without --track the track rows are skipped, with the reason.
    out2 = tmp_path / "report2"
    rc = cli.main(["eval", str(tmp_path / "noise"), "--methods", "bnmusic,track-raw",
                   "--out", str(out2), "-q"])  # fmt: skip
    skipped = json.loads((out2 / "results.json").read_text())["skipped"]
    assert rc == 0 and [s["method"] for s in skipped] == ["track-raw"]
    assert "--track" in skipped[0]["reason"]


def test_discover_noises_categories(tmp_path: Path) -> None:
    for rel in (
        "set/cars/a.wav",
        "set/cars/deep/b.wav",
        "set/esc_rain.wav",
        "set/plain.wav",
        "set/.hidden/c.wav",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.wav").write_bytes(b"")
    auto = discover_noises([tmp_path / "set", tmp_path / "x" / "a.wav"])
    got = {c.path.relative_to(tmp_path).as_posix(): (c.name, c.category) for c in auto}
    assert got == {
        "set/cars/a.wav": ("cars__a", "cars"),
        "set/cars/deep/b.wav": ("b", "cars"),
        "set/esc_rain.wav": ("esc_rain", "esc"),
        "set/plain.wav": ("plain", "other"),
        "x/a.wav": ("other__a", "other"),
    }
    assert {c.category for c in discover_noises([tmp_path / "set"], "prefix")} == {"other", "esc"}
    assert {c.category for c in discover_noises([tmp_path / "set"], "none")} == {"all"}
    assert {c.category for c in discover_noises([tmp_path / "set"], "folder")} == {"cars", "other"}
    with pytest.raises(AudioInputError, match="no such file"):
        discover_noises([tmp_path / "missing.wav"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AudioInputError, match="no audio files"):
        discover_noises([tmp_path / "empty"])
    with pytest.raises(ParameterError):
        discover_noises([tmp_path / "set"], "bogus")


def test_read_prompts_and_normalise_loudness(tmp_path: Path) -> None:
    p = tmp_path / "p.txt"
    p.write_text("  jazz trio  \n\n# skip me\npunk\n")
    assert read_prompts(p) == ("jazz trio", "punk")
    p.write_text("\n# nothing\n")
    with pytest.raises(ParameterError, match="no prompt"):
        read_prompts(p)
    with pytest.raises(ParameterError):
        read_prompts(tmp_path / "missing.txt")

    tone = (0.01 * np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)).astype(np.float32)[None, :]
    scaled, before, gain_db = normalise_loudness(tone, RATE, -18.0)
    assert integrated_lufs(scaled, RATE) == pytest.approx(-18.0, abs=0.01)
    assert gain_db == pytest.approx(-18.0 - before)
    with pytest.raises(AudioInputError, match="silent"):
        normalise_loudness(np.zeros((1, RATE), dtype=np.float32), RATE)


def test_method_request_per_method(tmp_path: Path) -> None:
    base = RenderRequest(seed=5, generator="procedural", generator_params={"style": "jazz"})
    config = EvalConfig(request=base, prompts=("a", "b"), music_dir=tmp_path)
    full = method_request(config, "bnmusic", 3)
    assert (full.generator, full.seed, full.prompt) == ("procedural", 8, "b")
    assert dict(full.generator_params) == {"style": "jazz"}
    rand = method_request(config, "random-music", 0)
    assert dict(rand.generator_params) == {"music_dir": str(tmp_path)}
    assert rand.prompt == "a" and rand.threshold_model == base.threshold_model
    assert dict(method_request(config, "noise-only", 0).generator_params) == {}
    assert method_request(config, "riffusion-a2a", 0).local_files_only is True
    with pytest.raises(ParameterError, match="music-dir"):
        method_request(EvalConfig(request=base), "random-music", 0)
    unaligned = method_request(config, "bnmusic-unaligned", 3)
    assert unaligned == full.replace(align_strength=0.0)
    with pytest.raises(ParameterError, match="--track"):
        method_request(config, "track-aligned", 0)
    with_track = EvalConfig(request=base, track=tmp_path / "mine.wav")
    raw = method_request(with_track, "track-raw", 0)
    fitted = method_request(with_track, "track-aligned", 0)
    assert raw.generator == fitted.generator == "track"
    assert raw.music == fitted.music == str(tmp_path / "mine.wav")
    assert dict(raw.generator_params) == {"fit": False} and raw.align_strength == 0.0
    assert dict(fitted.generator_params) == {} and fitted.align_strength == base.align_strength
    with pytest.raises(ParameterError, match="unknown method"):
        method_request(config, "musicgen", 0)


def test_frechet_distance_and_kl() -> None:
    # 1-D Gaussians: (mu_a - mu_b)^2 + var_a + var_b - 2 sqrt(var_a var_b).
    assert frechet_distance(
        np.zeros(1), np.eye(1), np.full(1, 3.0), 4 * np.eye(1)
    ) == pytest.approx(10.0)
    cov = np.array([[2.0, 0.3], [0.3, 1.0]])
    assert frechet_distance(np.ones(2), cov, np.ones(2), cov) == pytest.approx(0.0, abs=1e-8)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((400, 3)), rng.standard_normal((400, 3))
    assert fad(a, b) < 0.1 < 1.0 < fad(a, b + 1.0)
    assert math.isnan(fad(a[:1], b))
    p = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1]])
    assert mean_kl(p, p) < mean_kl(p, p[:, ::-1])
    assert mean_kl(p[:1], p[:1]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ParameterError):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_fad_kl_with_a_local_embedding_model(tmp_path: Path) -> None:
    """A tiny random audio classifier saved to a folder stands in for a real local one:
    the plumbing (find, embed the mixtures and the reference, FAD and KL per method)."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    model_dir = tmp_path / "tiny-ast"
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_length=64,
        num_mel_bins=32,
        num_labels=5,
        frequency_stride=16,
        time_stride=16,
    )
    ASTForAudioClassification(config).save_pretrained(model_dir)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(model_dir)
    embedder, note = find_embedding_model(str(model_dir))
    assert embedder is not None and embedder.sample_rate_hz == 16_000, note
    none, why = find_embedding_model(str(tmp_path / "absent"))
    assert none is None and "no such folder" in why and "looked for" in why

    write_audio(tmp_path / "noise" / "n1.wav", band_noise(1.5, seed=2), RATE)
    write_audio(tmp_path / "noise" / "n2.wav", clacks(1.5)[None, :], RATE)
    write_audio(tmp_path / "ref" / "song.wav", song(11.0), RATE)
    result = evaluate(
        discover_noises([tmp_path / "noise"], "none"),
        EvalConfig(
            methods=("noise-only", "random-music"),
            music_dir=tmp_path / "ref",
            reference_dir=tmp_path / "ref",
            embedding_model=str(model_dir),
        ),
    )
    assert "FAD/KL: computed" in result.distribution_note
    assert "2 reference segments" in result.distribution_note
    for method in ("noise-only", "random-music"):
        for scenario in ("normalised", "direct"):
            values = result.distribution[("all", method, scenario)]
            assert math.isfinite(values["fad"]) and values["fad"] >= -1e-6
            assert math.isfinite(values["kl"]) and values["kl"] >= 0.0


def test_paired_comparison_counts_clips(eval_run: tuple[int, Path, Path]) -> None:
    _, out, _ = eval_run
    paired = {(r["category"], r["method"]): r for r in _csv(out / "paired.csv")}
    assert set(paired) == {
        (c, m) for c in ("all", "hum", "train") for m in ("noise-only", "random-music")
    }
    # Silent music never reaches the target, so the full method wins every clip.
    assert paired[("all", "noise-only")]["wins_smr"] == "2"
    assert paired[("all", "noise-only")]["median_difference_lu_smr"] == "nan"
    assert paired[("train", "random-music")]["wins_smr"] == "1"
    assert float(paired[("train", "random-music")]["median_difference_lu_smr"]) < 0.0
    md = (out / "report.md").read_text()
    assert (
        len(
            _table_after(
                md,
                "### Clip by clip: loudness for 90 % coverage, full method against each other method (loudness normalised)",
            )
        )
        == 2 + 2
    )


def test_full_method_with_missing_riffusion_weights_is_skipped(tmp_path: Path) -> None:
    write_audio(tmp_path / "n.wav", band_noise(1.0, seed=3), RATE)
    request = RenderRequest(generator="riffusion", model=str(tmp_path / "no-weights"))
    result = evaluate(
        discover_noises([tmp_path / "n.wav"]),
        EvalConfig(methods=("bnmusic", "noise-only"), request=request),
    )
    assert [s.method for s in result.skipped] == ["bnmusic"]
    assert "generator 'riffusion'" in result.skipped[0].reason
    assert "not available locally" in result.skipped[0].reason
    assert {r.method for r in result.rows} == {"noise-only"}
    ablation = {r.label: r for r in ablation_table(result)}
    assert ablation["outpainting + inpainting"].note.startswith("not available")
