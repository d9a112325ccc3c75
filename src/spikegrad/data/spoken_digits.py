"""Spoken digits synthesised offline with espeak-ng, as audio and as SHD-format spikes.

``make_spoken_digits(folder)`` (CLI: ``spikegrad data make-spoken-digits``) speaks the
digits 0-9 in English (and, with ``german=True``, "null".."neun" as labels 10-19, as in
SHD) with many synthetic speakers. A speaker is an espeak-ng voice (an accent such as
``en-us`` or ``en-gb-scotland``) with a voice variant (``m1``..``m7``, ``f1``..``f5``,
``klatt``, ``croak``, ...); each speaker says every digit at several speeds (words per
minute) and pitches. Each utterance starts after a random 0-100 ms of silence and gets
a random gain (seeded), so that timing and level vary. A seeded ``test_fraction`` of
the *speakers* is held out: test utterances come from voices never heard in training.

Written to ``folder`` (the Heidelberg Digits layout, readable by ``data.name=audio``
with ``layout: heidelberg``)::

    audio/lang-english_speaker-<s>_trial-<t>_digit-<d>.flac   16 kHz mono
    train_filenames.txt, test_filenames.txt                    the speaker split
    spoken_digits_train.h5, spoken_digits_test.h5              SHD-format spikes
    speakers.json                                              who is who, all parameters

Audio-to-spike conversion (``audio_to_spikes``), a simple cochlea-like front end:

1. short-time power spectrum: 16 kHz, Hann window of ``n_fft`` = 512 samples (32 ms),
   hop 1 ms (centred frames);
2. a filterbank of ``n_channels`` = 700 channels (SHD's count) with centre frequencies
   evenly spaced on the ERB-rate scale from 50 Hz to 7.6 kHz, each a Gaussian in
   frequency with a standard deviation of half its equivalent rectangular bandwidth
   ERB(f) = 24.7 (4.37 f / 1000 + 1) Hz (weights normalised to sum to 1);
3. channel level in dB relative to the utterance's loudest channel-frame, half-wave
   rectified above a floor of -``dynamic_range_db`` (40 dB) and scaled to a drive d in
   [0, 1] (the compressive, rectifying hair-cell stage);
4. one non-leaky integrate-and-fire neuron per channel integrates r_max · d (r_max =
   ``max_rate_hz`` = 100 Hz), spikes on reaching 1 and resets by subtraction; initial
   states are uniform in [0, 1) (seeded), so channels do not fire in lockstep. Spike
   times are the threshold crossings, linearly interpolated within the 1 ms frame.

So each channel fires at a rate that grows with the log level of its band (at most
100 Hz), which keeps the spectro-temporal pattern of the word, like SHD's
700-channel cochlea model. Times are stored as float16 seconds, units as uint16.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from spikegrad.data.files import MissingDataError, cache_dir
from spikegrad.data.spike_file import write_spike_file
from spikegrad.io import atomic_write_text, make_folder

ENGLISH = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
GERMAN = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"]
ENGLISH_VOICES = ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-029", "en-us-nyc"]
GERMAN_VOICES = ["de"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
            "klatt2", "klatt3", "croak", "whisper", "whisperf", "max", "steph", "edward",
            "linda", "robert", "paul"]
SAMPLE_RATE = 16000
ESPEAK_HINT = ("espeak-ng is not installed; install it with `apt-get install espeak-ng` "
               "(Debian/Ubuntu) or `brew install espeak-ng` (macOS)")


@dataclass
class SynthesisOptions:
    """What to synthesise; the defaults take a few minutes on two CPU cores."""

    n_speakers: int = 24
    speeds_wpm: list[int] = field(default_factory=lambda: [140, 190])
    pitches: list[int] = field(default_factory=lambda: [30, 50, 70])
    german: bool = False
    test_fraction: float = 0.25
    seed: int = 0
    n_channels: int = 700
    max_rate_hz: float = 100.0
    dynamic_range_db: float = 40.0
    workers: int = 2

    @classmethod
    def small(cls, **overrides) -> SynthesisOptions:
        """A tiny set (8 speakers, one speed and pitch: 80 utterances) for tests."""
        return cls(**{"n_speakers": 8, "speeds_wpm": [160], "pitches": [50], **overrides})


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise MissingDataError(ESPEAK_HINT)
    return path


def default_folder() -> Path:
    return cache_dir() / "spoken-digits"


def speak(text: str, voice: str, speed: int, pitch: int) -> tuple[np.ndarray, int]:
    """One utterance from espeak-ng: float32 samples and their sample rate."""
    import soundfile

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "u.wav"
        subprocess.run([espeak_path(), "-v", voice, "-s", str(speed), "-p", str(pitch),
                        "-w", str(wav), text], check=True, capture_output=True)
        samples, rate = soundfile.read(str(wav), dtype="float32")
    return samples, rate


@functools.lru_cache(maxsize=4)
def erb_filterbank(n_channels: int, n_fft: int, sample_rate: int, fmin: float = 50.0,
                   fmax: float = 7600.0) -> np.ndarray:
    """[n_channels, n_fft // 2 + 1] Gaussian filters evenly spaced on the ERB-rate scale."""
    def erb_rate(f):
        return 21.4 * np.log10(1 + 0.00437 * f)

    rates = np.linspace(erb_rate(fmin), erb_rate(fmax), n_channels)
    centres = (10 ** (rates / 21.4) - 1) / 0.00437
    sigma = 0.5 * 24.7 * (4.37 * centres / 1000 + 1)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    weights = np.exp(-0.5 * ((freqs[None, :] - centres[:, None]) / sigma[:, None]) ** 2)
    return weights / weights.sum(axis=1, keepdims=True)


def audio_to_spikes(samples: np.ndarray, options: SynthesisOptions, rng: np.random.Generator,
                    n_fft: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Spike times (s) and channels of one 16 kHz utterance (module docstring, steps 1-4)."""
    import librosa

    hop = SAMPLE_RATE // 1000
    power = np.abs(librosa.stft(samples, n_fft=n_fft, hop_length=hop)) ** 2  # [F, frames]
    energy = erb_filterbank(options.n_channels, n_fft, SAMPLE_RATE) @ power  # [C, frames]
    db = 10 * np.log10(np.maximum(energy, 1e-20) / max(energy.max(), 1e-20))
    drive = np.clip(1 + db / options.dynamic_range_db, 0, 1)
    step = options.max_rate_hz / 1000.0  # spikes per frame at full drive (<= 1)
    state = rng.random(options.n_channels)[:, None] + np.cumsum(drive * step, axis=1)
    state = np.concatenate([state[:, :1] - drive[:, :1] * step, state], axis=1)
    count = np.floor(state)
    channel, frame = np.nonzero(count[:, 1:] > count[:, :-1])
    before, after = state[channel, frame], state[channel, frame + 1]
    times = (frame + (count[channel, frame + 1] - before) / (after - before)) / 1000.0
    order = np.argsort(times, kind="stable")
    return times[order], channel[order]


def plan(options: SynthesisOptions) -> tuple[list[dict], list[dict]]:
    """Speakers (voice, variant, split) and utterances (text, label, speed, pitch, ...)."""
    rng = np.random.default_rng(options.seed)
    languages = [("english", ENGLISH, ENGLISH_VOICES, 0)]
    if options.german:
        languages.append(("german", GERMAN, GERMAN_VOICES, 10))
    speakers, utterances = [], []
    for language, words, voices, offset in languages:
        combos = [(v, var) for v in voices for var in VARIANTS]
        chosen = rng.choice(len(combos), size=min(options.n_speakers, len(combos)),
                            replace=False)
        n_test = max(1, int(round(options.test_fraction * len(chosen))))
        for rank, index in enumerate(chosen):
            voice, variant = combos[index]
            speaker = {"id": len(speakers), "language": language, "voice": f"{voice}+{variant}",
                       "split": "test" if rank < n_test else "train"}
            speakers.append(speaker)
            trial = 0
            for speed in options.speeds_wpm:
                for pitch in options.pitches:
                    for digit, word in enumerate(words):
                        utterances.append({
                            "file": f"lang-{language}_speaker-{speaker['id']:02d}_trial-{trial}"
                                    f"_digit-{digit}.flac",
                            "text": word, "label": offset + digit, "speaker": speaker["id"],
                            "voice": speaker["voice"], "speed": speed, "pitch": pitch,
                            "split": speaker["split"],
                            "lead_s": float(rng.uniform(0.0, 0.1)),
                            "gain": float(rng.uniform(0.5, 1.0)),
                        })
                    trial += 1
    return speakers, utterances


def _render(utterance: dict) -> np.ndarray:
    import librosa

    samples, rate = speak(utterance["text"], utterance["voice"], utterance["speed"],
                          utterance["pitch"])
    samples = librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE)
    peak = np.abs(samples).max() or 1.0
    lead = np.zeros(int(utterance["lead_s"] * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([lead, samples / peak * utterance["gain"]]).astype(np.float32)


def make_spoken_digits(folder: str | Path, options: SynthesisOptions | None = None,
                       progress: bool = True) -> Path:
    """Synthesise the spoken digits into ``folder``: audio, split lists and SHD-format spikes.

    The set is made in a hidden folder inside ``folder`` and moved into place when it is
    complete; ``speakers.json``, which marks a complete set, is removed before the first file
    moves and written last. So an interrupted run leaves a set that was there as it was.
    """
    options = options or SynthesisOptions()
    espeak_path()
    folder = make_folder(folder)
    staging = Path(tempfile.mkdtemp(prefix=".making-", dir=folder))
    try:
        _synthesise(staging, options, progress)
        (folder / "speakers.json").unlink(missing_ok=True)  # incomplete from here ...
        for path in sorted(staging.rglob("*")):
            if path.is_file() and path.name != "speakers.json":
                target = folder / path.relative_to(staging)
                target.parent.mkdir(parents=True, exist_ok=True)
                path.replace(target)
        (staging / "speakers.json").replace(folder / "speakers.json")  # ... to here
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _synthesise(folder: Path, options: SynthesisOptions, progress: bool) -> None:
    """Every file of the set into the new folder ``folder``."""
    import soundfile
    from tqdm.auto import tqdm

    (folder / "audio").mkdir(parents=True, exist_ok=True)
    speakers, utterances = plan(options)
    spikes = {"train": ([], [], [], []), "test": ([], [], [], [])}
    rng = np.random.default_rng([options.seed, 1])
    with ThreadPoolExecutor(max(1, options.workers)) as pool:
        rendered = pool.map(_render, utterances)
        for utterance, samples in tqdm(zip(utterances, rendered, strict=True),
                                       total=len(utterances), desc="spoken digits",
                                       disable=not progress):
            soundfile.write(str(folder / "audio" / utterance["file"]), samples, SAMPLE_RATE,
                            format="FLAC")
            times, units = audio_to_spikes(samples, options, rng)
            lists = spikes[utterance["split"]]
            for target, value in zip(lists, (times, units, utterance["label"],
                                             utterance["speaker"]), strict=True):
                target.append(value)
    keys = ENGLISH + (GERMAN if options.german else [])
    voices = np.array([s["voice"].encode() for s in speakers])
    for split, (times, units, labels, speaker_ids) in spikes.items():
        names = [u["file"] for u in utterances if u["split"] == split]
        atomic_write_text(folder / f"{split}_filenames.txt", "\n".join(names) + "\n")
        write_spike_file(folder / f"spoken_digits_{split}.h5", times, units, np.array(labels),
                         np.array(speaker_ids), keys, {"voice": voices})
    atomic_write_text(folder / "speakers.json", json.dumps(
        {"options": asdict(options), "speakers": speakers}, indent=2) + "\n")


def ensure_spoken_digits(folder: str | Path) -> Path:
    """Synthesise the default spoken digits into ``folder`` unless they are there."""
    folder = Path(folder)
    if not (folder / "speakers.json").is_file():
        make_spoken_digits(folder)
    return folder
