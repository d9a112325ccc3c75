"""Raw audio as input current (the "current" data paradigm, protocol section 4).

Audio files (wav, flac: anything libsndfile reads) are turned into a log-Mel
spectrogram with librosa and fed to the first layer directly as real-valued input
current, one spectrogram frame per network step; no input spikes are involved.

Layouts of ``data.path``:

- ``class-folders``: one sub-folder per class (labels 0.. in sorted folder order),
  optionally under ``train/`` and ``test/`` (then that is the split; otherwise the
  seeded ``split`` fractions are used).
- ``heidelberg``: the Heidelberg Digits raw-audio layout: ``audio/`` with files named
  ``lang-<english|german>_speaker-<s>_trial-<t>_digit-<d>.<flac|wav>`` and the official
  split in ``train_filenames.txt`` / ``test_filenames.txt`` (one file name per line).
  Label = digit for English, 10 + digit for German (as in SHD).

Spectrogram of one file, on the network's grid of T steps of dt:

1. load, mix to mono, resample to ``mel.sample_rate`` (soxr, via librosa);
2. power Mel spectrogram, ``n_mels`` bands in [fmin, fmax], window ``n_fft``, hop =
   sample_rate · dt (centred frames: frame n is centred on time n·dt; a non-integer hop
   is rounded and the frames are linearly interpolated onto the times n·dt);
3. dB relative to the file's loudest bin, floored at -top_db, mapped to [0, 1]:
   x = (dB + top_db) / top_db (silence = 0);
4. the first T frames are kept; shorter files are padded with silence (0);
5. ``normalise``: ``peak`` keeps step 3's [0, 1] scale; ``standard`` then subtracts
   each band's mean and divides by its standard deviation, both over the training set;
   finally everything is multiplied by ``gain``.

Spectrograms are cached, keyed by every file and parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spikegrad.data.base import CurrentDataset, DataSplits, split_indices
from spikegrad.data.configs import AudioConfig, MelConfig
from spikegrad.data.files import (
    DataFileError,
    MissingDataError,
    cache_key,
    cached_arrays,
    data_folder,
)
from spikegrad.data.spoken_digits import default_folder, ensure_spoken_digits

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif")
HEIDELBERG_NAME = re.compile(
    r"lang-(?P<lang>[a-z]+)_speaker-(?P<speaker>\d+)_trial-(?P<trial>\d+)_digit-(?P<digit>\d+)"
)
LANGUAGE_OFFSET = {"english": 0, "german": 10}


@dataclass
class AudioFiles:
    """Audio files with labels, and the split they belong to (``train`` or ``test``)."""

    paths: list[Path]
    labels: np.ndarray
    splits: np.ndarray  # "train" / "test" / "" (no official split)
    classes: list[str]


def _audio_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)


def class_folder_files(folder: Path) -> AudioFiles:
    """Files of the ``class-folders`` layout (optionally split into train/ and test/)."""
    roots = [(folder / "train", "train"), (folder / "test", "test")]
    if not all(root.is_dir() for root, _ in roots):
        roots = [(folder, "")]
    classes = sorted(p.name for p in roots[0][0].iterdir() if p.is_dir())
    if not classes:
        raise MissingDataError(f"{roots[0][0]}: no class folders with audio files")
    paths, labels, splits = [], [], []
    for root, split in roots:
        for sub in sorted(p for p in root.iterdir() if p.is_dir()):
            if sub.name not in classes:
                raise DataFileError(sub, f"class folder not in the training classes {classes}")
            files = _audio_in(sub)
            paths += files
            labels += [classes.index(sub.name)] * len(files)
            splits += [split] * len(files)
    if not paths:
        raise MissingDataError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return AudioFiles(paths, np.array(labels, dtype=np.int64), np.array(splits), classes)


def heidelberg_label(path: str | Path) -> int:
    """SHD label of a Heidelberg Digits file name: digit, + 10 for German."""
    match = HEIDELBERG_NAME.search(Path(path).name)
    if match is None or match["lang"] not in LANGUAGE_OFFSET:
        raise DataFileError(path, "file name does not follow lang-<english|german>_speaker-<s>_"
                                  "trial-<t>_digit-<d>")
    return LANGUAGE_OFFSET[match["lang"]] + int(match["digit"])


def heidelberg_files(folder: Path) -> AudioFiles:
    """Files of the Heidelberg Digits layout, with the official split from its lists."""
    audio = folder / "audio"
    if not audio.is_dir():
        raise MissingDataError(f"{folder}: no audio/ folder (Heidelberg Digits layout)")
    paths, labels, splits = [], [], []
    for split in ("train", "test"):
        listing = folder / f"{split}_filenames.txt"
        if not listing.is_file():
            raise MissingDataError(f"{listing}: missing (Heidelberg Digits split list)")
        for name in listing.read_text().split():
            path = audio / name
            if not path.is_file():
                raise DataFileError(listing, f"lists {name}, which is not in {audio}")
            paths.append(path)
            labels.append(heidelberg_label(path))
            splits.append(split)
    names = [f"{lang}-{d}" for lang in LANGUAGE_OFFSET for d in range(10)]
    return AudioFiles(paths, np.array(labels, dtype=np.int64), np.array(splits), names)


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of an audio file, resampled to ``sample_rate``."""
    import librosa
    import soundfile

    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise DataFileError(path, f"not a readable audio file ({error})") from None
    samples = samples.mean(axis=1)
    if len(samples) == 0:
        raise DataFileError(path, "audio file has no samples")
    if not np.isfinite(samples).all():
        raise DataFileError(path, "audio file holds non-finite samples (NaN or infinity)")
    if rate != sample_rate:
        samples = librosa.resample(samples, orig_sr=rate, target_sr=sample_rate)
    return samples.astype(np.float32)


def mel_frames(samples: np.ndarray, mel: MelConfig, n_steps: int, dt_ms: float) -> np.ndarray:
    """Steps 2-4 of the module docstring: [n_steps, n_mels] in [0, 1] on the network's grid."""
    import librosa

    exact_hop = mel.sample_rate * dt_ms / 1000.0
    hop = max(1, int(round(exact_hop)))
    power = librosa.feature.melspectrogram(
        y=samples, sr=mel.sample_rate, n_fft=mel.n_fft, hop_length=hop, n_mels=mel.n_mels,
        fmin=mel.fmin, fmax=mel.fmax, power=2.0,
    )
    db = librosa.power_to_db(power, ref=np.max, top_db=mel.top_db)
    frames = ((db + mel.top_db) / mel.top_db).T  # [frames, n_mels], silence 0, peak 1
    if abs(hop - exact_hop) > 1e-9:  # interpolate frames (at k·hop/sr) onto n·dt
        frame_times = np.arange(len(frames)) * hop / mel.sample_rate
        grid = np.arange(min(n_steps, int(frame_times[-1] / (dt_ms / 1000)) + 1)) * dt_ms / 1000
        frames = np.stack([np.interp(grid, frame_times, band) for band in frames.T], axis=1)
    out = np.zeros((n_steps, mel.n_mels), dtype=np.float32)
    kept = min(n_steps, len(frames))
    out[:kept] = frames[:kept]
    return out


def spectrograms(paths: list[Path], mel: MelConfig, n_steps: int, dt_ms: float,
                 progress: bool = True) -> np.ndarray:
    """[N, n_steps, n_mels] spectrograms of ``paths`` (cached by files and parameters)."""
    from tqdm.auto import tqdm

    def compute():
        items = tqdm(paths, desc="mel spectrograms", disable=not progress or len(paths) < 200)
        out = [mel_frames(load_audio(p, mel.sample_rate), mel, n_steps, dt_ms) for p in items]
        return {"inputs": np.stack(out) if out else np.zeros((0, n_steps, mel.n_mels))}

    params = {"mel": mel.model_dump(exclude={"normalise", "gain"}), "n_steps": n_steps,
              "dt_ms": dt_ms, "version": 1}
    return cached_arrays(cache_key("mel", params, paths), compute, names=("inputs",))["inputs"]


def audio_files(config: AudioConfig, folder: Path) -> AudioFiles:
    if not folder.is_dir():
        raise MissingDataError(f"{folder}: no such folder (set data.path to the audio folder)")
    files = heidelberg_files(folder) if config.layout == "heidelberg" else class_folder_files(
        folder)
    if config.n_classes is not None and len(files.labels) and files.labels.max() >= \
            config.n_classes:
        bad = files.paths[int(np.argmax(files.labels))]
        raise DataFileError(bad, f"label {files.labels.max()} out of range "
                                 f"0..{config.n_classes - 1}")
    return files


def build_audio(config: AudioConfig, n_steps: int, dt_ms: float) -> DataSplits:
    """Audio files as Mel-spectrogram input current, split train/valid/test."""
    folder = data_folder(config)
    if config.name == "spoken-digits-audio" and config.path is None:
        folder = default_folder()
        ensure_spoken_digits(folder)
    files = audio_files(config, folder)
    inputs = spectrograms(files.paths, config.mel, n_steps, dt_ms)
    rng = np.random.default_rng(config.seed)
    if (files.splits == "test").any():
        train_all, test = np.flatnonzero(files.splits == "train"), np.flatnonzero(
            files.splits == "test")
        order = rng.permutation(len(train_all))
        n_valid = max(1, int(round(config.valid_fraction * len(train_all))))
        valid, train = np.sort(train_all[order[:n_valid]]), np.sort(train_all[order[n_valid:]])
    else:
        fractions = (config.split.train, config.split.valid, config.split.test)
        train, valid, test = split_indices(len(files.paths), fractions, rng)
    if config.mel.normalise == "standard":
        mean = inputs[train].mean(axis=(0, 1))
        std = inputs[train].std(axis=(0, 1)) + 1e-6
        inputs = (inputs - mean) / std
    inputs = inputs * config.mel.gain
    n_classes = config.n_classes or int(files.labels.max()) + 1
    dataset = CurrentDataset(inputs.astype(np.float32), files.labels)
    return DataSplits(name=config.name, train=dataset.subset(train),
                      valid=dataset.subset(valid), test=dataset.subset(test),
                      n_inputs=config.mel.n_mels, n_classes=n_classes, n_steps=n_steps,
                      input_kind="current")
