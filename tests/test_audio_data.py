"""Audio input: the mel front end, datasets, and each bad-input case with its error."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from sharedflow.audio import MelSpectrogram
from sharedflow.data import (
    AudioClips,
    AudioError,
    AudioSegments,
    GlottalPulses,
    Harmonics,
    list_audio,
    load_audio,
)
from sharedflow.data.builtin import speech_corpus, synthesize_utterance


def _wav(path: Path, seconds: float = 0.5, rate: int = 22050, channels: int = 1) -> Path:
    rng = np.random.default_rng(0)
    audio = 0.1 * rng.standard_normal((int(seconds * rate), channels)).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"sample_rate": 16000, "hop_length": 200, "win_length": 800, "n_fft": 1024},
        {"sample_rate": 24000, "hop_length": 300, "n_mels": 100, "f_max": None},
    ],
)
def test_mel_matches_an_independent_librosa_computation(settings: dict) -> None:
    mel = MelSpectrogram(**settings)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 8000).astype(np.float32)
    ours = mel(torch.from_numpy(x)).numpy()
    magnitude = np.abs(
        librosa.stft(
            x,
            n_fft=mel.n_fft,
            hop_length=mel.hop_length,
            win_length=mel.win_length,
            window="hann",
            center=True,
            pad_mode="reflect",
        )
    )
    basis = librosa.filters.mel(
        sr=mel.sample_rate,
        n_fft=mel.n_fft,
        n_mels=mel.n_mels,
        fmin=0.0,
        fmax=settings.get("f_max", 8000.0),
    )
    reference = np.log(np.clip(basis @ magnitude, 1e-5, None))
    assert ours.shape == reference.shape == (mel.n_mels, 1 + 8000 // mel.hop_length)
    assert np.abs(ours - reference).max() < 1e-4


def test_mel_matches_torchaudio_where_it_imports() -> None:
    torchaudio = pytest.importorskip("torchaudio")
    ours = MelSpectrogram()
    theirs = torchaudio.transforms.MelSpectrogram(
        22050,
        n_fft=1024,
        win_length=1024,
        hop_length=256,
        f_min=0.0,
        f_max=8000.0,
        n_mels=80,
        power=1.0,
        norm="slaney",
        mel_scale="slaney",
        center=True,
        pad_mode="reflect",
    )
    x = torch.rand(8000) - 0.5
    assert torch.allclose(ours(x), torch.log(torch.clamp(theirs(x), min=1e-5)), atol=1e-4)


def test_mel_is_batched_and_frames_are_one_plus_t_over_hop() -> None:
    mel = MelSpectrogram()(torch.zeros(3, 16000))
    assert mel.shape == (3, 80, 63)
    assert torch.allclose(mel, torch.full_like(mel, np.log(1e-5)))


def test_builtin_corpus_is_ljspeech_layout_and_deterministic(tmp_path: Path) -> None:
    a = speech_corpus(tmp_path / "a", n_clips=4)
    b = speech_corpus(tmp_path / "b", n_clips=4)
    assert (a / "metadata.csv").is_file() and len(list_audio(a)) == 4
    for x, y in zip(list_audio(a), list_audio(b), strict=True):
        assert np.array_equal(sf.read(x)[0], sf.read(y)[0])
    clip = load_audio(list_audio(a)[0], 22050)
    assert 0.1 < np.abs(clip).max() <= 0.5 and len(clip) > 22050


def test_the_corpus_is_written_beside_its_folder_and_renamed_into_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader (a run trained beside the writer) never sees a part of the corpus."""
    root, written, write = tmp_path / "c", [], sf.write

    def spy(path: Path, *args: object, **kwargs: object) -> None:
        written.append(Path(path))
        write(path, *args, **kwargs)

    monkeypatch.setattr(sf, "write", spy)
    assert speech_corpus(root, n_clips=2) == root and len(list_audio(root)) == 2
    assert len(written) == 2 and not any(root in p.parents for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.lock", "c"]  # no part beside it


def test_writers_at_once_leave_one_whole_corpus_and_a_part_is_replaced(tmp_path: Path) -> None:
    root = tmp_path / "c"
    (root / "wavs").mkdir(parents=True)
    (root / "wavs" / "SF001-0009.wav").write_bytes(b"cut short")  # an interrupted writer's
    with ThreadPoolExecutor(4) as pool:
        roots = list(pool.map(lambda _: speech_corpus(root, n_clips=3), range(4)))
    assert roots == [root] * 4 and len(list_audio(root)) == 3
    assert all(len(sf.read(p)[0]) > 0 for p in list_audio(root))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".c.lock", "c"]


def test_the_harmonic_voice_is_voiced_at_its_pitch_and_has_its_own_cache(tmp_path: Path) -> None:
    voice = Harmonics(f0_min=150.0, f0_max=200.0)
    root = speech_corpus(tmp_path / "h", n_clips=1, sample_rate=8000, voice=voice)
    clip = load_audio(list_audio(root)[0], 8000)
    f0, voiced, _ = librosa.pyin(clip, fmin=60, fmax=400, sr=8000, frame_length=512)
    assert voiced.mean() > 0.5  # syllables, with pauses and bursts between them
    assert 150 * 0.85 < np.nanmedian(f0) < 200 * 1.15  # the contour swings +-15%
    assert GlottalPulses().name == "speech-v2"  # the default corpus keeps its cache
    assert len({GlottalPulses(80, 200).name, voice.name, Harmonics().name}) == 3


def test_the_voices_vibrato_sets_how_fast_the_pitch_moves() -> None:
    def cents_per_frame(vibrato: float) -> float:
        voice = Harmonics(vibrato=vibrato)
        clip = synthesize_utterance(np.random.default_rng(1), 8000, voice)
        f0, _, _ = librosa.pyin(clip, fmin=60, fmax=400, sr=8000, frame_length=512)
        return float(np.nanmedian(np.abs(np.diff(1200 * np.log2(f0)))))

    assert cents_per_frame(0.0) < 5 < 20 < cents_per_frame(0.15)  # steady syllables; +-15%
    assert Harmonics(vibrato=0.03).name != Harmonics().name  # a corpus of its own


def test_folder_file_list_and_reference_split(tmp_path: Path) -> None:
    for name in ["b.wav", "a.wav", "sub/c.flac"]:
        _wav(tmp_path / "folder" / name)
    assert [p.name for p in list_audio(tmp_path / "folder")] == ["a.wav", "b.wav", "c.flac"]
    listing = tmp_path / "list.txt"
    listing.write_text("folder/b.wav\n# a comment\nfolder/a.wav\n")
    assert [p.name for p in list_audio(listing)] == ["a.wav", "b.wav"]
    test = AudioClips(tmp_path / "folder", split="test", n_test=1)
    train = AudioClips(tmp_path / "folder", split="train", n_test=1)
    assert [p.name for p in test.files] == ["a.wav"] and len(train) == 2


def test_segments_are_random_crops_or_zero_padded(tmp_path: Path) -> None:
    _wav(tmp_path / "long.wav", seconds=1.0)
    _wav(tmp_path / "short.wav", seconds=0.1)
    clips = AudioClips(tmp_path)
    segments = AudioSegments(clips, 4000)
    long_index = [p.name for p in clips.files].index("long.wav")
    a, b = segments[(long_index, 1)], segments[(long_index, 2)]
    assert a.shape == (4000,) and not torch.equal(a, b)
    assert torch.equal(a, segments[(long_index, 1)])  # the seed decides
    short = segments[(1 - long_index, 1)]
    assert short.shape == (4000,) and short[2205:].abs().sum() == 0


def test_wrong_sample_rate_names_the_file_and_both_rates(tmp_path: Path) -> None:
    path = _wav(tmp_path / "x.wav", rate=16000)
    with pytest.raises(AudioError, match=r"x\.wav: sample rate 16000 Hz.*22050 Hz"):
        load_audio(path, 22050)
    assert len(load_audio(path, 22050, resample=True)) == pytest.approx(0.5 * 22050, abs=2)


def test_stereo_is_mixed_down_with_a_warning(tmp_path: Path) -> None:
    path = _wav(tmp_path / "stereo.wav", channels=2)
    with pytest.warns(UserWarning, match="2 channels mixed down"):
        audio = load_audio(path, 22050)
    assert audio.ndim == 1


def test_unreadable_truncated_and_empty_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "garbage.wav").write_bytes(b"not audio at all")
    full = _wav(tmp_path / "whole.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(full[: len(full) // 2])
    sf.write(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 22050)
    for name, message in [
        ("garbage", "cannot read"),
        ("truncated", "truncated"),
        ("empty", "no samples"),
    ]:
        with pytest.raises(AudioError, match=rf"{name}\.wav: .*{message}"):
            load_audio(tmp_path / f"{name}.wav", 22050)
    with pytest.raises(AudioError, match=r"empty\.wav: the file holds no samples"):
        AudioClips(tmp_path)
    with pytest.warns(UserWarning, match="skipped 3 bad audio files"):
        clips = AudioClips(tmp_path, skip_bad=True)
    assert [p.name for p in clips.files] == ["whole.wav"] and len(clips.skipped) == 3


def test_empty_datasets_are_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="no audio files"):
        list_audio(tmp_path)
    _wav(tmp_path / "only.wav")
    with pytest.raises(AudioError, match="holds no usable audio"):
        AudioClips(tmp_path, split="train", n_test=1)
    with pytest.raises(FileNotFoundError):
        list_audio(tmp_path / "missing")
