"""Data: the IDX and CIFAR readers, data sets by name, downloads, image folders, batches, transforms.

    from cnnkit.data import load_dataset, DataLoader, Compose, RandomCrop, RandomHorizontalFlip, ToFloat, Normalize
    train, val = load_dataset("fashion-mnist", "train").split(5000, seed=0)
    mean, std = train.mean_std()
    loader = DataLoader(train, batch_size=64, shuffle=True, seed=0,
                        transform=Compose([RandomCrop(28, padding=2), ToFloat(), Normalize(mean, std)]))
    for x, y in loader:   # x float32 (B, 1, 28, 28), y int64 (B,)
        ...
"""

from .cifar import CIFARError, read_cifar_bin
from .datasets import ArrayDataset, DatasetError, DatasetNotFoundError, load_dataset, search_paths
from .fetch import ChecksumError, FetchError, UnsafeArchiveError, fetch, safe_extract
from .folder import ImageFolder, ImageFolderError
from .idx import IDXError, parse_idx, read_idx, write_idx
from .loader import DataLoader
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, RepeatChannels, Resize, ToFloat

__all__ = [
    "ArrayDataset", "load_dataset", "search_paths", "DatasetError", "DatasetNotFoundError",
    "read_cifar_bin", "CIFARError",
    "fetch", "safe_extract", "FetchError", "ChecksumError", "UnsafeArchiveError",
    "ImageFolder", "ImageFolderError",
    "read_idx", "parse_idx", "write_idx", "IDXError",
    "DataLoader",
    "Compose", "Normalize", "RandomCrop", "RandomHorizontalFlip", "RepeatChannels", "Resize", "ToFloat",
]
