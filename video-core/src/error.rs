//! The one error type of vidgen.

use std::path::PathBuf;

/// Result alias used across vidgen.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in vidgen, with the names a user needs to fix it.
///
/// The enum is `#[non_exhaustive]`: new kinds can be added without breaking matches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor a model needs is absent from its checkpoint.
    #[error("missing `{key}` in {file}{}", did_you_mean(.nearest))]
    MissingTensor {
        /// The checkpoint key that was looked up.
        key: String,
        /// The file (or directory) that was searched.
        file: String,
        /// The existing keys closest to `key`, best first.
        nearest: Vec<String>,
    },
    /// A tensor has another shape than the one required.
    #[error("shape mismatch for `{key}`: expected {expected:?}, found {found:?}{}", in_file(.file))]
    ShapeMismatch {
        /// What the tensor is (a checkpoint key, or an argument name).
        key: String,
        /// The required shape.
        expected: Vec<usize>,
        /// The shape that was given.
        found: Vec<usize>,
        /// The file the tensor came from, if it came from one.
        file: Option<String>,
    },
    /// A tensor has another dtype than the one required.
    #[error("dtype mismatch for `{key}`: expected {expected}, found {found}")]
    DType {
        /// What the tensor is.
        key: String,
        /// The accepted dtype(s).
        expected: String,
        /// The dtype that was given.
        found: String,
    },
    /// A configuration field has a wrong type or an invalid value.
    #[error("bad config field `{field}`{}: {reason}", in_file(.file))]
    BadConfig {
        /// Dotted path of the field (`block_out_channels[2]`).
        field: String,
        /// Why it was rejected.
        reason: String,
        /// The config file, when read from one.
        file: Option<String>,
    },
    /// A configuration value is valid for the reference library but not supported here.
    #[error("unsupported value for `{field}`: {value} (supported: {supported})")]
    Unsupported {
        /// The field.
        field: String,
        /// The value found.
        value: String,
        /// What is supported.
        supported: String,
    },
    /// Arguments that do not fit together (ranks, channel counts, ranges).
    #[error("invalid argument `{name}`: {reason}")]
    InvalidArgument {
        /// The argument.
        name: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A compute backend (CUDA driver, NVRTC) failed or is not present.
    #[error("{backend}: {reason}")]
    Backend {
        /// The backend and what was being done (`CUDA driver`, `NVRTC compile of attention`).
        backend: String,
        /// Its message.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("I/O error on {}: {source}", .path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file exists but its contents are malformed (truncated safetensors, bad JSON, ...).
    #[error("malformed file {}: {reason}", .path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Several keys were missing or mismatched while loading a model; the report lists them all.
    #[error("{0}")]
    Load(Box<crate::loading::LoadReport>),
    /// The operation needs a cargo feature that this build does not have.
    #[error("`{what}` needs the `{feature}` feature of crate `{krate}`")]
    FeatureDisabled {
        /// What was asked for.
        what: String,
        /// The feature to enable.
        feature: String,
        /// The crate that has it.
        krate: String,
    },
    /// A tensor holds NaN or infinite values where finite values are required.
    #[error("non-finite values in {location}: {nan} NaN, {inf} infinite of {total}")]
    NonFinite {
        /// Where they were found (`unet output`, `latents after step 12`).
        location: String,
        /// How many NaN values.
        nan: usize,
        /// How many infinite values.
        inf: usize,
        /// How many values in all.
        total: usize,
    },
    /// An error from candle (tensor ops, devices).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    /// Builds an [`Error::InvalidArgument`].
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Backend`].
    pub fn backend(backend: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Backend {
            backend: backend.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::ShapeMismatch`] for an argument (no file).
    pub fn shape(key: impl Into<String>, expected: &[usize], found: &[usize]) -> Self {
        Error::ShapeMismatch {
            key: key.into(),
            expected: expected.to_vec(),
            found: found.to_vec(),
            file: None,
        }
    }

    /// Builds an [`Error::BadConfig`] without a file.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::BadConfig {
            field: field.into(),
            reason: reason.into(),
            file: None,
        }
    }
}

fn did_you_mean(nearest: &[String]) -> String {
    if nearest.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = nearest.iter().map(|n| format!("`{n}`")).collect();
        format!(" (did you mean {}?)", names.join(", "))
    }
}

fn in_file(file: &Option<String>) -> String {
    match file {
        Some(f) => format!(" in {f}"),
        None => String::new(),
    }
}
