//! diffusers pipeline folders: `model_index.json` naming each component's library and class,
//! and one sub-folder per component, as `DiffusionPipeline.save_pretrained` writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use vidgen_video_core::{load_tracked, Error, LoadReport, ModelDir, Result, TensorSource};

/// One entry of `model_index.json`: `"unet": ["diffusers", "UNetSpatioTemporalConditionModel"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentSpec {
    /// The component's name (the folder name).
    pub name: String,
    /// The library that defines its class (`diffusers`, `transformers`).
    pub library: String,
    /// The class name.
    pub class: String,
}

/// What a loaded pipeline holds, one row per component.
#[derive(Debug, Clone)]
pub struct ComponentReport {
    /// The component's name.
    pub name: String,
    /// Its class in `model_index.json`.
    pub class: String,
    /// The dtype its weights were loaded in (`None` for weightless components: schedulers,
    /// tokenizers, image processors).
    pub dtype: Option<DType>,
    /// Its number of parameters (0 for weightless components).
    pub params: usize,
    /// The strict loader's report (unused keys, for instance), for weighted components.
    pub load: Option<LoadReport>,
}

impl std::fmt::Display for ComponentReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.dtype {
            Some(dt) => write!(
                f,
                "{:<18} {:<36} {:>5?} {:>12} params",
                self.name, self.class, dt, self.params
            ),
            None => write!(f, "{:<18} {:<36}", self.name, self.class),
        }
    }
}

/// A diffusers pipeline folder opened for loading.
#[derive(Debug, Clone)]
pub struct PipelineFolder {
    root: PathBuf,
    class: String,
    components: BTreeMap<String, ComponentSpec>,
    variant: Option<String>,
}

impl PipelineFolder {
    /// Reads `dir/model_index.json`.
    ///
    /// # Errors
    /// A missing or malformed `model_index.json` ([`Error::Io`] / [`Error::Malformed`] naming
    /// the file).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_variant(dir, None)
    }

    /// [`PipelineFolder::open`] loading the weight files of a named variant (diffusers'
    /// `variant="fp16"`: `diffusion_pytorch_model.fp16.safetensors`, `model.fp16.safetensors`)
    /// in every component.
    ///
    /// # Errors
    /// As [`PipelineFolder::open`].
    pub fn open_variant(dir: impl AsRef<Path>, variant: Option<&str>) -> Result<Self> {
        let root = dir.as_ref().to_path_buf();
        let index = root.join("model_index.json");
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
            path: index.clone(),
            source,
        })?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Malformed {
                path: index.clone(),
                reason: e.to_string(),
            })?;
        let obj = value.as_object().ok_or_else(|| Error::Malformed {
            path: index.clone(),
            reason: "not a JSON object".into(),
        })?;
        let class = obj
            .get("_class_name")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::Malformed {
                path: index.clone(),
                reason: "no `_class_name`".into(),
            })?
            .to_string();
        let mut components = BTreeMap::new();
        for (name, v) in obj {
            if name.starts_with('_') {
                continue;
            }
            // `[library, class]`; `[null, null]` marks an absent optional component.
            let Some(arr) = v.as_array() else { continue };
            match (
                arr.first().and_then(|x| x.as_str()),
                arr.get(1).and_then(|x| x.as_str()),
            ) {
                (Some(library), Some(cls)) => {
                    components.insert(
                        name.clone(),
                        ComponentSpec {
                            name: name.clone(),
                            library: library.to_string(),
                            class: cls.to_string(),
                        },
                    );
                }
                _ if arr.iter().all(|x| x.is_null()) => {}
                _ => {
                    return Err(Error::Malformed {
                        path: index,
                        reason: format!("component `{name}` is not [library, class]: {v}"),
                    })
                }
            }
        }
        Ok(Self {
            root,
            class,
            components,
            variant: variant.map(String::from),
        })
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The pipeline class (`StableVideoDiffusionPipeline`).
    pub fn class(&self) -> &str {
        &self.class
    }

    /// Every component listed, by name.
    pub fn components(&self) -> impl Iterator<Item = &ComponentSpec> {
        self.components.values()
    }

    /// The weight variant in use.
    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// Checks the pipeline class is one of `classes`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] naming the folder and the class found.
    pub fn expect_class(&self, classes: &[&str]) -> Result<()> {
        if classes.contains(&self.class.as_str()) {
            return Ok(());
        }
        Err(Error::Unsupported {
            field: format!("{}/model_index.json: _class_name", self.root.display()),
            value: self.class.clone(),
            supported: classes.join(", "),
        })
    }

    /// The spec of component `name`, checking its class is one of `classes`.
    ///
    /// # Errors
    /// The component missing from `model_index.json` or its folder absent
    /// ([`Error::InvalidArgument`] naming both), or another class ([`Error::Unsupported`]).
    pub fn component(&self, name: &str, classes: &[&str]) -> Result<(&ComponentSpec, PathBuf)> {
        let spec = self.components.get(name).ok_or_else(|| {
            Error::invalid(
                format!("{}/model_index.json", self.root.display()),
                format!(
                    "the pipeline has no `{name}` component (it lists: {})",
                    self.components
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        if !classes.contains(&spec.class.as_str()) {
            return Err(Error::Unsupported {
                field: format!("{}/model_index.json: {name}", self.root.display()),
                value: spec.class.clone(),
                supported: classes.join(", "),
            });
        }
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::invalid(
                dir.display().to_string(),
                format!("component `{name}` ({}) has no folder", spec.class),
            ));
        }
        Ok((spec, dir))
    }

    /// Whether component `name` is listed (and not null).
    pub fn has(&self, name: &str) -> bool {
        self.components.contains_key(name)
    }

    /// Reads a JSON config of component `name` (`config.json`, `scheduler_config.json`,
    /// `preprocessor_config.json`).
    ///
    /// # Errors
    /// The file missing or malformed, naming it.
    pub fn read_json<T: DeserializeOwned>(&self, name: &str, file: &str) -> Result<T> {
        vidgen_video_core::loading::read_config(self.root.join(name).join(file))
    }

    /// Loads component `name` strictly: its `config.json` into `C`, its weights (of this
    /// folder's variant) into the model built by `build`, and a [`ComponentReport`].
    ///
    /// # Errors
    /// As [`PipelineFolder::component`]; config or weight errors (missing / mis-shaped keys
    /// named with their file).
    pub fn load_model<C, M>(
        &self,
        name: &str,
        classes: &[&str],
        dtype: DType,
        device: &Device,
        build: impl FnOnce(&C, VarBuilder<'static>) -> Result<M>,
    ) -> Result<(C, M, ComponentReport)>
    where
        C: DeserializeOwned,
    {
        self.load_model_with(name, classes, dtype, device, None, build)
    }

    /// As [`PipelineFolder::load_model`], with some of the component's tensors replaced by
    /// `overrides` (fine-tuned layers stored elsewhere, e.g. AID's cross-attention). Strict both
    /// ways: every override must be a key the model asks for, with the shape it asks for.
    ///
    /// # Errors
    /// As [`PipelineFolder::load_model`]; an override the model does not use (named, with the
    /// file it came from).
    pub fn load_model_with<C, M>(
        &self,
        name: &str,
        classes: &[&str],
        dtype: DType,
        device: &Device,
        overrides: Option<&TensorOverrides>,
        build: impl FnOnce(&C, VarBuilder<'static>) -> Result<M>,
    ) -> Result<(C, M, ComponentReport)>
    where
        C: DeserializeOwned,
    {
        let (spec, dir) = self.component(name, classes)?;
        let cfg: C = vidgen_video_core::loading::read_config(dir.join("config.json"))?;
        let md = ModelDir::open_variant(&dir, self.variant.as_deref())?;
        let (model, load) = match overrides {
            None => md.load(dtype, device, |vb| build(&cfg, vb))?,
            Some(o) => {
                let source = Overlay {
                    base: md.clone(),
                    over: o.clone(),
                };
                let (model, load) =
                    load_tracked(Arc::new(source), dtype, device, |vb| build(&cfg, vb))?;
                let stray: Vec<String> = load
                    .unused
                    .iter()
                    .filter(|(k, _)| o.tensors.contains_key(k))
                    .map(|(k, _)| format!("{}{k}", o.prefix))
                    .collect();
                if !stray.is_empty() {
                    return Err(Error::invalid(
                        o.file.display().to_string(),
                        format!("`{name}` does not use these tensors: {}", stray.join(", ")),
                    ));
                }
                (model, load)
            }
        };
        let params = md
            .tensors()
            .iter()
            .filter(|t| !load.unused.iter().any(|(u, _)| u == &t.name))
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        let report = ComponentReport {
            name: name.to_string(),
            class: spec.class.clone(),
            dtype: Some(dtype),
            params,
            load: Some(load),
        };
        Ok((cfg, model, report))
    }

    /// A report row for a component loaded by its crate's own `from_pretrained` (which may
    /// read checkpoint layouts `ModelDir` alone does not, e.g. CLIP's optional prefixes).
    ///
    /// # Errors
    /// The component not listed.
    pub fn report_for(
        &self,
        name: &str,
        dtype: DType,
        load: LoadReport,
    ) -> Result<ComponentReport> {
        let spec = self.components.get(name).ok_or_else(|| {
            Error::invalid(
                format!("{}/model_index.json", self.root.display()),
                format!("the pipeline has no `{name}` component"),
            )
        })?;
        let md = ModelDir::open_variant(self.root.join(name), self.variant.as_deref())?;
        let params = md
            .tensors()
            .iter()
            .filter(|t| !load.unused.iter().any(|(u, _)| u == &t.name))
            .map(|t| t.shape.iter().product::<usize>())
            .sum();
        Ok(ComponentReport {
            name: name.to_string(),
            class: spec.class.clone(),
            dtype: Some(dtype),
            params,
            load: Some(load),
        })
    }

    /// A report row for a weightless component.
    ///
    /// # Errors
    /// As [`PipelineFolder::component`].
    pub fn weightless(&self, name: &str, classes: &[&str]) -> Result<ComponentReport> {
        let (spec, _) = self.component(name, classes)?;
        Ok(ComponentReport {
            name: name.to_string(),
            class: spec.class.clone(),
            dtype: None,
            params: 0,
            load: None,
        })
    }
}

/// Tensors that replace a component's stored ones when it loads
/// ([`PipelineFolder::load_model_with`]), keyed as in the component's checkpoint.
#[derive(Debug, Clone)]
pub struct TensorOverrides {
    /// The replacing tensors.
    pub tensors: BTreeMap<String, Tensor>,
    /// The file they came from (named in errors and in the load report).
    pub file: PathBuf,
    /// The prefix their keys carry in `file` (e.g. `unet.`), for naming them in errors.
    pub prefix: String,
}

/// A component's checkpoint with some tensors replaced.
struct Overlay {
    base: ModelDir,
    over: TensorOverrides,
}

impl TensorSource for Overlay {
    fn load(&self, name: &str, device: &Device) -> candle_core::Result<Option<Tensor>> {
        match self.over.tensors.get(name) {
            Some(t) => Ok(Some(t.to_device(device)?)),
            None if self.base.contains(name) => Ok(Some(
                self.base
                    .get(name, device)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?,
            )),
            None => Ok(None),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.over.tensors.contains_key(name) || self.base.contains(name)
    }

    fn keys(&self) -> Vec<(String, PathBuf)> {
        let mut k: Vec<(String, PathBuf)> = self
            .base
            .tensors()
            .into_iter()
            .filter(|t| !self.over.tensors.contains_key(&t.name))
            .map(|t| (t.name, t.file))
            .collect();
        k.extend(
            self.over
                .tensors
                .keys()
                .map(|n| (n.clone(), self.over.file.clone())),
        );
        k
    }

    fn describe(&self) -> String {
        format!(
            "{} with {} tensors from {}",
            self.base.root().display(),
            self.over.tensors.len(),
            self.over.file.display()
        )
    }

    fn root(&self) -> PathBuf {
        self.base.root().to_path_buf()
    }
}
