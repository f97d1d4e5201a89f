"""Training data: parquet, JSON lines or CSV files, turned into one `text` column.

Three shapes, as KAITO's tuning accepts them: OpenAI-style chats in a messages column (rendered
with the model's chat template), a context and a response column (concatenated), or plain text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datasets import Dataset, load_dataset
from transformers import PreTrainedTokenizerBase

from kairyu_tuning.config import TEXT_COLUMN, DatasetSection
from kairyu_tuning.failure import StepError

_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


def find_files(directory: Path, config: DatasetSection) -> tuple[str, list[str]]:
    """The loader name and the files to train on."""
    root = Path(config.dataset_path) if config.dataset_path else directory
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    wanted = config.dataset_extension
    usable = [
        p
        for p in files
        if p.suffix in _FORMATS
        and (wanted is None or _FORMATS[p.suffix] == _FORMATS[f".{wanted}"])
        and not p.name.startswith(".")
    ]
    if not usable:
        raise StepError(f"no parquet, JSON lines or CSV training files in {root}")
    kinds = {_FORMATS[p.suffix] for p in usable}
    if len(kinds) > 1:
        raise StepError(f"mixed data formats in {root} ({', '.join(sorted(kinds))}); keep one")
    return kinds.pop(), [str(p) for p in usable]


def load_text(
    directory: Path, config: DatasetSection, tokenizer: PreTrainedTokenizerBase
) -> tuple[Dataset, Dataset | None]:
    kind, files = find_files(directory, config)
    dataset = load_dataset(kind, data_files=files, split="train")
    dataset = dataset.map(
        lambda row: {TEXT_COLUMN: _text(row, config, tokenizer)},
        remove_columns=dataset.column_names,
    )
    dataset = dataset.filter(lambda row: bool(row[TEXT_COLUMN]))
    if len(dataset) == 0:
        raise StepError("the training data has no usable rows")
    if config.shuffle_dataset:
        dataset = dataset.shuffle(seed=config.shuffle_seed)
    if config.train_test_split >= 1:
        return dataset, None
    split = dataset.train_test_split(train_size=config.train_test_split, seed=config.shuffle_seed)
    return split["train"], split["test"]


def _text(row: dict[str, Any], config: DatasetSection, tokenizer: PreTrainedTokenizerBase) -> str:
    messages_column = config.messages_column or ("messages" if "messages" in row else None)
    if messages_column:
        messages = row.get(messages_column)
        if messages_column not in row:
            raise StepError(f"the data has no {messages_column!r} column")
        if not messages:
            return ""
        if not tokenizer.chat_template:
            raise StepError("chat data needs a tokenizer with a chat template")
        return str(tokenizer.apply_chat_template(list(messages), tokenize=False))
    if config.response_column not in row:
        raise StepError(
            f"the data has no {config.response_column!r} column (columns: {', '.join(row)})"
        )
    response = str(row[config.response_column] or "")
    if config.context_column:
        return f"{row.get(config.context_column) or ''}{response}"
    return response
