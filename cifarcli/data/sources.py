"""Where CIFAR-10 and CIFAR-100 come from and how their official archives are laid out."""

from __future__ import annotations

from dataclasses import dataclass

from cifarcli.errors import UsageError


@dataclass(frozen=True)
class DatasetSource:
    """The facts about one official archive (the pickled "python version" of the data set)."""

    name: str                       # "cifar10" | "cifar100", as in DataConfig.dataset
    url: str                        # official download address
    md5: str                        # md5 of the official archive, lower-case hex
    archive_name: str               # file name the archive is stored under in the data root
    folder: str                     # top-level folder inside the archive
    train_files: tuple[str, ...]    # batch files of the training set, in order
    test_files: tuple[str, ...]     # batch files of the test set
    meta_file: str                  # pickle holding the class names
    label_key: bytes                # per-image fine label list in each batch
    coarse_label_key: bytes | None  # per-image superclass label list (CIFAR-100 only)
    class_names_key: bytes          # class-name list in the meta file
    superclass_names_key: bytes | None
    num_classes: int
    num_superclasses: int | None

    def member(self, file_name: str) -> str:
        """The archive member name of one of this data set's files."""
        return f"{self.folder}/{file_name}"


SOURCES: dict[str, DatasetSource] = {
    "cifar10": DatasetSource(
        name="cifar10",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        archive_name="cifar-10-python.tar.gz",
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key=b"labels",
        coarse_label_key=None,
        class_names_key=b"label_names",
        superclass_names_key=None,
        num_classes=10,
        num_superclasses=None,
    ),
    "cifar100": DatasetSource(
        name="cifar100",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        archive_name="cifar-100-python.tar.gz",
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key=b"fine_labels",
        coarse_label_key=b"coarse_labels",
        class_names_key=b"fine_label_names",
        superclass_names_key=b"coarse_label_names",
        num_classes=100,
        num_superclasses=20,
    ),
}


def get_source(dataset: str) -> DatasetSource:
    """The archive facts for `dataset`, or UsageError listing the known names."""
    try:
        return SOURCES[dataset]
    except KeyError:
        raise UsageError(f"unknown dataset {dataset!r}; choose one of {', '.join(SOURCES)}") from None
