//! Loads Centrex manifests from YAML files, the way `kubectl apply -f <dir>` reads them: local
//! mode and the tests take the very same files a cluster takes.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use serde_json::Value;

use crate::crd::{self, MediaPool, SignallingPool, Tenant, Trunk};
use crate::schema_check;

/// Every object found in a set of manifests, by kind.
#[derive(Debug, Default, Clone)]
pub struct Manifests {
    pub tenants: Vec<Tenant>,
    pub trunks: Vec<Trunk>,
    pub media_pools: Vec<MediaPool>,
    pub signalling_pools: Vec<SignallingPool>,
    pub secrets: Vec<Secret>,
}

/// Why a manifest could not be loaded; names the file and the document.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {message}")]
    Yaml { path: PathBuf, message: String },
    #[error("{path}: {kind} {name:?} is invalid: {message}")]
    Invalid {
        path: PathBuf,
        kind: String,
        name: String,
        message: String,
    },
    #[error(
        "{path}: unsupported kind {kind:?} (expected Tenant, Trunk, MediaPool, SignallingPool or Secret)"
    )]
    UnsupportedKind { path: PathBuf, kind: String },
}

impl Manifests {
    /// Loads every `*.yaml`/`*.yml` file of a directory (sorted by name), or one file.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let files = if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|source| ManifestError::Read {
                    path: path.into(),
                    source,
                })?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut manifests = Manifests::default();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(|source| ManifestError::Read {
                path: file.clone(),
                source,
            })?;
            manifests.add_yaml(&file, &text)?;
        }
        Ok(manifests)
    }

    /// Adds every document of one YAML text, checked against the CRD schemas and CEL rules.
    pub fn add_yaml(&mut self, path: &Path, text: &str) -> Result<(), ManifestError> {
        let documents: Vec<Value> =
            serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml {
                path: path.into(),
                message: e.to_string(),
            })?;
        for document in documents.into_iter().filter(|d| !d.is_null()) {
            self.add(path, document)?;
        }
        Ok(())
    }

    fn add(&mut self, path: &Path, document: Value) -> Result<(), ManifestError> {
        let kind = document["kind"].as_str().unwrap_or_default().to_string();
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let invalid = |message: String| ManifestError::Invalid {
            path: path.into(),
            kind: kind.clone(),
            name: name.clone(),
            message,
        };
        if kind == "Secret" {
            let secret = serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?;
            self.secrets.push(secret);
            return Ok(());
        }
        let Some(definition) = crd::all().into_iter().find(|c| c.spec.names.kind == kind) else {
            return Err(ManifestError::UnsupportedKind {
                path: path.into(),
                kind,
            });
        };
        let document = schema_check::check(&definition, document)
            .map_err(|errors| invalid(errors.join("; ")))?;
        match kind.as_str() {
            "Tenant" => self
                .tenants
                .push(serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?),
            "Trunk" => self
                .trunks
                .push(serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?),
            "MediaPool" => self
                .media_pools
                .push(serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?),
            _ => self
                .signalling_pools
                .push(serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?),
        }
        Ok(())
    }
}
