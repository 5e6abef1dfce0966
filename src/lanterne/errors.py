"""The errors Lanterne raises for people: each message says what was wrong and how to fix it.

Every user mistake (a missing file, an unknown tokenizer name, a corrupt vocabulary) is a
`LanterneError`; the CLI prints it on one line and exits non-zero, without a traceback.
"""


class LanterneError(Exception):
    """A problem the user can fix; the message names the problem and the fix."""


class InputFileError(LanterneError):
    """A file given by the user is missing, empty, binary or not UTF-8 text."""


class InputTextError(LanterneError):
    """Text given on the command line that cannot be read (not valid UTF-8)."""


class TokenizerError(LanterneError):
    """A tokenizer was asked something it cannot do (unknown id, bad settings, ...)."""


class UnknownTokenizerError(TokenizerError):
    """No tokenizer has this name, and no file has this path."""


class VocabularyFileError(TokenizerError):
    """A vocabulary or tokenizer file is corrupt, truncated or of an unknown format."""


class SpecialTokenError(TokenizerError):
    """The text contains a special token (like <|endoftext|>) that was not allowed."""


class DownloadError(LanterneError):
    """A file could not be fetched (offline, or its checksum did not match)."""


class ConfigError(LanterneError):
    """A model configuration that cannot describe a working model."""


class ModelInputError(LanterneError):
    """Token ids or a sequence the model cannot take (id out of vocabulary, longer than the context)."""


class CheckpointError(LanterneError):
    """A model folder or weights file that is missing, corrupt, or does not match its configuration."""


class UnknownModelError(CheckpointError):
    """No named model has this name, and no file or folder has this path."""


class GenerationError(LanterneError):
    """Generation settings or a prompt that cannot be used (negative temperature, empty prompt, ...)."""


class TrainingDataError(InputFileError):
    """Training data that cannot be used (bad JSONL line, too few tokens, bad split settings, ...)."""


class HardwareError(LanterneError):
    """A device or number format this machine does not have (CUDA asked on a CPU machine, bf16 without support)."""
