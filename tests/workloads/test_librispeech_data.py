"""librispeech data: the mini dataset, tokenizer, batches, the .npy layout, tfds (mocked and
real array_record files written without TensorFlow) and missing-data errors."""

import itertools

import numpy as np
import pytest
import sentencepiece as spm
import tensorflow_datasets as tfds

from workloads.librispeech import (
    Librispeech,
    batching,
    mini_dataset,
    prepare_tfds,
    sentences,
    speech,
    tfds_source,
    tokenizer,
)

UTTERANCES = 40  # 32 / 4 / 4: synthesized in about a second


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    data_dir = tmp_path_factory.getbasetemp() / "librispeech_data"  # shared by test files
    mini_dataset.prepare(data_dir, UTTERANCES, progress=False)
    return data_dir


@pytest.fixture(scope="module")
def mini(data_dir):
    return mini_dataset.load(data_dir, UTTERANCES, progress=False)


def _workload(data_dir, **kwargs):
    return Librispeech(size="tiny", data_dir=str(data_dir), max_utterances=UTTERANCES, **kwargs)


def test_mini_dataset_is_cached_and_held_out_sentences_are_new(data_dir, mini, monkeypatch):
    root = mini_dataset.cache_dir(data_dir, UTTERANCES, 0.3)
    assert mini["dir"] == root and not list(root.parent.glob(".*tmp"))
    monkeypatch.setattr(mini_dataset, "build", lambda *a, **k: pytest.fail("rebuilt"))
    assert mini_dataset.prepare(data_dir, UTTERANCES) == root
    splits = mini["splits"]
    assert [len(splits[s]) for s in mini_dataset.SPLITS] == [32, 4, 4]
    train = set(splits["train"].texts())
    held_out = splits["validation"].texts() + splits["test"].texts()
    assert not train & set(held_out) and len(set(held_out)) == 8
    for split in splits.values():
        for i in range(len(split)):
            item = split[i]
            assert item["audio"].dtype == np.int16
            assert 8_000 < len(item["audio"]) <= mini_dataset.MAX_SAMPLES
            assert item["text"] == item["text"].upper() and 6 <= len(item["text"].split()) <= 12
    assert np.nanmax(mini["meta"]["snr_db"]) <= 30 and len(set(mini["meta"]["voice"])) > 10


def test_vocabulary_has_over_1000_words_used_by_the_default_training_split():
    assert len(sentences.nouns()) > 900 and len(sentences.vocabulary()) > 1200
    drawn = mini_dataset.draw_sentences(mini_dataset.DEFAULT_SIZES)
    train_words = {w for text, split in drawn if split == 0 for w in text.split()}
    assert len(train_words) >= 1000 and train_words <= sentences.vocabulary()


def test_espeak_speaks_at_16_khz_with_different_voices():
    rng = np.random.default_rng(0)
    a, settings_a = speech.speak("the quick brown fox", rng)
    b, settings_b = speech.speak("the quick brown fox", rng, noise_prob=1.0)
    assert settings_a["voice"] != settings_b["voice"] and settings_b["snr_db"] is not None
    for audio in (a, b):
        assert audio.dtype == np.int16 and 0.6 < len(audio) / speech.TARGET_RATE < 2.5
        assert np.abs(audio.astype(np.float64)).mean() > 300


def test_tokenizer_reserves_the_blank_and_round_trips(mini):
    texts = mini["splits"]["train"].texts()
    sp = tokenizer.load(tokenizer.train(texts, 64))
    assert sp.id_to_piece(0) == "<pad>" and sp.get_piece_size() <= 64
    for text in texts + mini["splits"]["test"].texts():
        ids = tokenizer.encode(sp, text)
        assert 0 not in ids and tokenizer.decode(sp, ids) == text
    assert tokenizer.decode(sp, [*ids, 63, 500]) == text or sp.get_piece_size() > 63


def test_batches_have_static_shapes_and_resume_exactly(data_dir):
    workload = _workload(data_dir)
    first = list(itertools.islice(workload.batches("train", 8, seed=3, num_shards=2), 6))
    resumed = next(workload.batches("train", 8, seed=3, num_shards=2, start_step=5))
    for key in first[5]:
        np.testing.assert_array_equal(first[5][key], resumed[key])
    fake = workload.fake_batch(8, 2)
    for batch in first:
        assert {k: (v.shape, v.dtype) for k, v in batch.items()} == {
            k: (v.shape, v.dtype) for k, v in fake.items()
        }
    assert all(b["weights"].sum() == 8 for b in first)
    # Four batches of 8 are one epoch of 32: every utterance once, then reshuffled.
    epoch = np.concatenate([b["audio_len"] for b in first[:4]])
    assert len(set(epoch.tolist())) >= 30
    val = list(workload.batches("validation", 8, seed=0))
    assert len(val) == 1 and val[0]["weights"].tolist() == [1.0] * 4 + [0.0] * 4


def test_too_long_utterances_become_zero_weight_rows():
    shapes = batching.Shapes(max_samples=16_000, max_targets=4)
    examples = [
        (np.ones(16_000), np.array([5, 6])),
        (np.ones(16_001), np.array([5, 6])),  # too many samples
        (np.ones(8_000), np.array([5, 6, 7, 8, 9])),  # too many tokens
        (np.ones(400), np.array([5, 5, 5])),  # too short for CTC (repeats need blanks)
    ]
    batch = batching.collate(examples, 6, shapes)
    assert batch["weights"].tolist() == [1, 0, 0, 0, 0, 0]
    assert batch["audio_len"].tolist() == [16_000, 0, 0, 0, 0, 0]


def _write_npy_layout(mini, root):
    """The mini data in AlgoPerf's layout, with a tokenizer of SentencePiece's default ids
    (<unk> = 0, EOS = 2 appended to every target) as AlgoPerf's."""
    base = root / "librispeech"
    base.mkdir(parents=True)
    texts = mini["splits"]["train"].texts()
    model = spm.SentencePieceTrainer
    model.train(
        sentence_iterator=iter(texts), model_prefix=str(base / "spm"), vocab_size=100,
        character_coverage=1.0, minloglevel=2,
    )  # fmt: skip
    (base / "spm.model").rename(base / "spm_model.vocab")
    sp = tokenizer.load(base / "spm_model.vocab")
    subsets = {"train": ["train-clean-100", "train-clean-360", "train-other-500"],
               "validation": ["dev-clean", "dev-other"], "test": ["test-clean"]}  # fmt: skip
    for split, names in subsets.items():
        source = mini["splits"][split]
        for k, name in enumerate(names):
            (base / name).mkdir()
            rows = [",id"]
            for i in range(k, len(source), len(names)):
                utt = f"{k}-{i}-0000"
                item = source[i]
                np.save(base / name / f"{utt}_audio.npy", item["audio"].astype(np.int64))
                ids = np.array([*sp.encode(item["text"]), sp.eos_id()], np.int32)
                np.save(base / name / f"{utt}_targets.npy", ids)
                rows.append(f"{len(rows) - 1},{utt}")
            (base / f"{name}.csv").write_text("\n".join(rows) + "\n")


def test_npy_layout_feeds_the_same_pipeline(mini, tmp_path):
    _write_npy_layout(mini, tmp_path)
    workload = Librispeech(size="tiny", data="npy", data_dir=str(tmp_path), vocab_size=100)
    assert [len(workload.source(s)) for s in ("train", "validation", "test")] == [32, 4, 4]
    batch = next(workload.batches("validation", 8, seed=0))
    assert batch["weights"].sum() == 4 and batch["audio"].shape == (8, 320_000)
    refs = [tokenizer.decode(workload.tokenizer, t[:n]) for t, n in
            zip(batch["targets"][:4], batch["target_len"][:4], strict=True)]  # fmt: skip
    assert sorted(refs) == sorted(mini["splits"]["validation"].texts())  # dev-clean, dev-other


def _tfds_examples(mini, split):
    source = mini["splits"][split]
    return [
        {
            "speech": source[i]["audio"],
            "text": source[i]["text"].encode(),
            "id": f"{split}-{i}",
            "speaker_id": 1,
            "chapter_id": 2,
        }  # fmt: skip
        for i in range(len(source))
    ]


def test_mocked_tfds_librispeech_feeds_the_same_pipeline(mini, tmp_path):
    names = {"train_clean100+train_clean360+train_other500": "train", "train_clean100": "train",
             "dev_clean+dev_other": "validation", "test_clean": "test"}  # fmt: skip
    served = []

    def as_data_source(builder, split, **kwargs):
        served.append((builder.name, split))
        return _tfds_examples(mini, names[split])

    with tfds.testing.mock_data(as_data_source_fn=as_data_source):
        workload = Librispeech(size="tiny", data="tfds", data_dir=str(tmp_path), vocab_size=64)
        batch = next(workload.batches("train", 8, seed=0))
        val = list(workload.batches("validation", 8, seed=0))
    assert ("librispeech", "dev_clean+dev_other") in served
    assert batch["weights"].sum() == 8 and batch["audio"].shape == (8, 320_000)
    assert (tmp_path / "librispeech_cache" / "tfds" / "spm_64.model").exists()
    assert sum(b["weights"].sum() for b in val) == 4


def test_prepare_tfds_writes_array_records_read_without_mocks(mini, tmp_path):
    pytest.importorskip("importlib_resources", reason="tfds download_and_prepare needs it")
    # A LibriSpeech-shaped tree per split; .flac files hold raw int16 (decoder swapped below).
    folders = {}
    for split in prepare_tfds.ARCHIVES:
        ours = {"dev_clean": "validation", "test_clean": "test"}.get(split, "train")
        source = mini["splits"][ours]
        chapter = tmp_path / "src" / split / "LibriSpeech" / split / "19" / "198"
        chapter.mkdir(parents=True)
        lines = []
        for i in range(min(len(source), 3)):
            key = f"19-198-{i:04d}"
            source[i]["audio"].tofile(chapter / f"{key}.flac")
            lines.append(f"{key} {source[i]['text']}")
        (chapter / "19-198.trans.txt").write_text("\n".join(lines) + "\n")
        folders[split] = tmp_path / "src" / split
    raw = lambda path: np.fromfile(path, np.int16)  # noqa: E731
    prepare_tfds.prepare_from_extracted(tmp_path / "data", folders, decode=raw)

    validation = tfds_source.open_split(tmp_path / "data", "validation")
    assert len(validation) == 3 + 3  # dev_clean + dev_other
    texts = {validation[i]["text"].decode() for i in range(6)}
    assert set(mini["splits"]["validation"].texts()[:3]) <= texts
    audio = {validation[i]["audio"].tobytes() for i in range(6)}
    assert mini["splits"]["validation"][0]["audio"].tobytes() in audio
    workload = Librispeech(size="tiny", data="tfds", data_dir=str(tmp_path / "data"))
    batch = next(workload.batches("train", 4, seed=0))  # tokenizer trained on train_clean100
    assert batch["weights"].sum() == 4


@pytest.mark.parametrize("data", ["tfds", "npy"])
def test_missing_real_data_is_one_clear_error(data, tmp_path):
    workload = Librispeech(size="tiny", data=data, data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        next(workload.batches("train", 8, seed=0))
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message and "workload.data=mini" in message
    if data == "tfds":
        assert "librispeech-train_clean100.array_record-*" in message
        assert f"python -m workloads.librispeech.prepare_tfds --data_dir {tmp_path}" in message
    else:
        assert "train-clean-100.csv" in message and "dataset_setup.py" in message
