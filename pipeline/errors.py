"""The one error type users see: the CLI prints its message as one line and exits non-zero."""


class PipelineError(Exception):
    """Bad input or state a user can fix. The message names the file/row/value and the fix."""


class CompetitionError(PipelineError):
    """The competition folder cannot be read as a Kaggle image-classification competition."""


class RecipeError(PipelineError):
    """A models/<run>.toml recipe is invalid."""


class ArtifactError(PipelineError):
    """An artifact file is missing, corrupt, or disagrees with another artifact."""


class SubmissionError(PipelineError):
    """submission.csv does not match sample_submission.csv, or sending it failed."""
