"""Audio files (wav, flac) as Mel-spectrogram input current: layouts, values, bad files."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import soundfile
import torch

from spikegrad.data import build_data
from spikegrad.data.audio import heidelberg_files, load_audio, mel_frames
from spikegrad.data.configs import AudioConfig, MelConfig
from spikegrad.data.files import DataFileError, MissingDataError

RATE = 16000


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))


def tone(freq: float, start_s: float, length_s: float = 0.6, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(length_s * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t) * (t >= start_s)).astype(np.float32)


def test_wav_and_flac_load_exactly(tmp_path):
    values = (np.arange(-400, 400, dtype=np.int16) * 40)
    soundfile.write(tmp_path / "a.flac", values, RATE, subtype="PCM_16")
    soundfile.write(tmp_path / "a.wav", values, RATE, subtype="PCM_16")
    stereo = np.stack([values, values], axis=1)
    soundfile.write(tmp_path / "s.wav", stereo, RATE, subtype="PCM_16")
    for name in ("a.flac", "a.wav", "s.wav"):
        samples = load_audio(tmp_path / name, RATE)
        np.testing.assert_array_equal(samples, values.astype(np.float32) / 32768)
    resampled = load_audio(tmp_path / "a.wav", 8000)
    assert len(resampled) == 400


def test_mel_frames_on_the_network_grid():
    mel = MelConfig(n_mels=32, n_fft=512)
    samples = tone(1000.0, start_s=0.3)
    frames = mel_frames(samples, mel, n_steps=100, dt_ms=10.0)
    assert frames.shape == (100, 32) and frames.dtype == np.float32
    # frame n is centred on n * 10 ms: silent before 0.3 s minus half a window, loud after
    assert frames[:25].max() == 0 and frames[32:60].max() == pytest.approx(1.0)
    assert frames[61:].max() == 0  # the 0.6 s file is padded with silence
    band = np.argmax(frames[40])
    centres = librosa.mel_frequencies(32 + 2, fmin=50.0, fmax=RATE / 2)[1:-1]
    assert abs(centres[band] - 1000) < 200
    # exactly librosa's log-Mel spectrogram, rescaled from [-top_db, 0] dB to [0, 1]
    power = librosa.feature.melspectrogram(y=samples, sr=RATE, n_fft=512, hop_length=160,
                                           n_mels=32, fmin=50.0)
    db = librosa.power_to_db(power, ref=np.max, top_db=80.0)
    np.testing.assert_allclose(frames[:61], ((db + 80) / 80).T, rtol=1e-6, atol=1e-6)


def test_non_integer_hop_is_interpolated_onto_the_grid():
    frames = mel_frames(tone(500.0, 0.2), MelConfig(n_mels=16), n_steps=50, dt_ms=7.03)
    assert frames.shape == (50, 16)
    assert frames[:20].max() == 0 and frames[35].max() > 0.9


def write_class_folders(root, split_folders=False):
    classes = {"low": 300.0, "high": 3000.0}
    for split in (["train", "test"] if split_folders else [""]):
        for name, freq in classes.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(5 if split != "test" else 2):
                suffix = ".flac" if i % 2 else ".wav"
                soundfile.write(folder / f"{name}{i}{suffix}", tone(freq, 0.05 * i), RATE)


def test_class_folder_layout_builds_current_data(tmp_path):
    write_class_folders(tmp_path / "audio")
    config = AudioConfig(path=str(tmp_path / "audio"), mel=MelConfig(n_mels=16),
                         split={"train": 0.6, "valid": 0.2, "test": 0.2})
    splits = build_data(config, n_steps=60, dt_ms=10.0)
    assert splits.input_kind == "current" and splits.n_inputs == 16 and splits.n_classes == 2
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (6, 2, 2)
    x, y = splits.train.batch(range(6))
    assert x.shape == (6, 60, 16) and x.dtype == torch.float32
    # "high" (label 0, sorted first) is louder in the top bands than "low" (label 1)
    assert set(y.tolist()) == {0, 1}
    top = x[:, :, 12:].mean(dim=(1, 2))
    assert (top[y == 0].min() > top[y == 1].max())


def test_class_folders_with_train_test_subfolders(tmp_path):
    write_class_folders(tmp_path / "audio", split_folders=True)
    config = AudioConfig(path=str(tmp_path / "audio"), mel=MelConfig(n_mels=8,
                         normalise="standard", gain=2.0), valid_fraction=0.2)
    splits = build_data(config, n_steps=40, dt_ms=10.0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (8, 2, 4)
    x = splits.train.inputs
    torch.testing.assert_close(x.mean(dim=(0, 1)), torch.zeros(8), atol=1e-4, rtol=0)


def write_heidelberg(root, names_train, names_test):
    (root / "audio").mkdir(parents=True)
    for name in names_train + names_test:
        soundfile.write(root / "audio" / name, tone(800.0, 0.1, 0.3), RATE)
    (root / "train_filenames.txt").write_text("\n".join(names_train) + "\n")
    (root / "test_filenames.txt").write_text("\n".join(names_test) + "\n")


def test_heidelberg_layout_labels_and_split(tmp_path):
    train = [f"lang-english_speaker-0{s}_trial-0_digit-{d}.flac" for s in (1, 2) for d in (0, 9)]
    test = ["lang-german_speaker-03_trial-1_digit-3.flac"]
    write_heidelberg(tmp_path, train, test)
    files = heidelberg_files(tmp_path)
    assert files.labels.tolist() == [0, 9, 0, 9, 13]
    assert files.splits.tolist() == ["train"] * 4 + ["test"]
    config = AudioConfig(path=str(tmp_path), layout="heidelberg", n_classes=20,
                         valid_fraction=0.25, mel=MelConfig(n_mels=8))
    splits = build_data(config, n_steps=30, dt_ms=10.0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (3, 1, 1)
    assert splits.test.labels.tolist() == [13] and splits.n_classes == 20


def test_bad_audio_files_fail_with_one_line(tmp_path):
    (tmp_path / "noise.wav").write_bytes(b"RIFF1234WAVEfmt garbage")
    with pytest.raises(DataFileError) as excinfo:
        load_audio(tmp_path / "noise.wav", RATE)
    assert "noise.wav" in str(excinfo.value) and "not a readable audio file" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)
    soundfile.write(tmp_path / "empty.wav", np.zeros(0, np.float32), RATE)
    with pytest.raises(DataFileError, match="empty.wav: audio file has no samples"):
        load_audio(tmp_path / "empty.wav", RATE)

    hd = tmp_path / "hd"
    write_heidelberg(hd, ["lang-english_speaker-01_trial-0_digit-1.flac"],
                     ["lang-english_speaker-01_trial-0_digit-2.flac"])
    (hd / "test_filenames.txt").write_text("lang-english_speaker-09_trial-0_digit-2.flac\n")
    with pytest.raises(DataFileError, match="test_filenames.txt: lists lang-english_speaker-09"):
        heidelberg_files(hd)
    (hd / "test_filenames.txt").write_text("lang-klingon_speaker-01_trial-0_digit-2.flac\n")
    soundfile.write(hd / "audio" / "lang-klingon_speaker-01_trial-0_digit-2.flac",
                    tone(800.0, 0.1, 0.3), RATE)
    with pytest.raises(DataFileError, match="klingon.*does not follow"):
        heidelberg_files(hd)
    (hd / "test_filenames.txt").write_text("lang-german_speaker-01_trial-0_digit-2.flac\n")
    soundfile.write(hd / "audio" / "lang-german_speaker-01_trial-0_digit-2.flac",
                    tone(800.0, 0.1, 0.3), RATE)
    config = AudioConfig(path=str(hd), layout="heidelberg", n_classes=10)
    with pytest.raises(DataFileError, match="lang-german.*label 12 out of range 0..9"):
        build_data(config, n_steps=10, dt_ms=10.0)
    with pytest.raises(MissingDataError, match="no audio/ folder"):
        build_data(AudioConfig(path=str(tmp_path), layout="heidelberg"), n_steps=10, dt_ms=10.0)
