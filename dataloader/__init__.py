"""Audio datasets (one folder, or paired noisy/clean folders), random-crop collaters and DataLoader builders."""

from dataloader.audio_files import (
    TRAINING_EXTENSIONS,
    collect_audio_files,
    find_audio_files,
    num_frames,
    read_training_audio,
)
from dataloader.collater import AudioCollater, PairedAudioCollater
from dataloader.dataset import AudioDataset, PairedAudioDataset
from dataloader.loader import (
    SUBSET_KEYS,
    build_collater,
    build_data_loaders,
    build_dataset,
    build_datasets,
    build_paired_dataset,
    subset_path,
)

__all__ = [
    "TRAINING_EXTENSIONS",
    "SUBSET_KEYS",
    "AudioCollater",
    "AudioDataset",
    "PairedAudioCollater",
    "PairedAudioDataset",
    "build_collater",
    "build_data_loaders",
    "build_dataset",
    "build_datasets",
    "build_paired_dataset",
    "collect_audio_files",
    "find_audio_files",
    "num_frames",
    "read_training_audio",
    "subset_path",
]
