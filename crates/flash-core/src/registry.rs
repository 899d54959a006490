//! The set of cache classes, built once at start-up and immutable afterwards.
//! Mistakes in the declaration are [`RegistryError`]s here, not at first use.

use crate::class::{CacheKind, ClassSpec};
use crate::error::RegistryError;
use crate::key::is_plain_name;
use std::any::Any;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// What flash knows of a model: its name (table) and primary-key fields.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    /// The model's name, as classes refer to it.
    pub name: String,
    /// Its primary-key fields.
    pub pk: Vec<String>,
}

/// A foreign key whose target is read through the target's primary-key cache.
#[derive(Clone, Debug)]
pub struct CachedForeignKey {
    /// The model holding the foreign key.
    pub model: String,
    /// The foreign-key field.
    pub field: String,
    /// The model it points to (it needs a primary-key instance cache).
    pub target: String,
}

type SimpleKey = (String, CacheKind, BTreeSet<String>);

/// FNV-1a, for the maps a lookup reads by model name: the names are the
/// application's own (no one can choose them to collide), short, and
/// SipHash cost a lookup more than the rest of finding its class.
pub(crate) struct NameHasher(u64);

impl Default for NameHasher {
    fn default() -> Self {
        NameHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for NameHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

type ByName = std::hash::BuildHasherDefault<NameHasher>;
/// A simple class: its kind, key fields and `Class<T>` behind `Any`.
type SimpleEntry = (CacheKind, Vec<String>, Arc<dyn Any + Send + Sync>);

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) models: HashMap<String, ModelInfo>,
    pub(crate) classes: Vec<Arc<ClassSpec>>,
    names: HashMap<String, usize>,
    /// Simple classes by (model, kind, field set), as `Class<T>` behind `Any`.
    simple: HashMap<SimpleKey, Arc<dyn Any + Send + Sync>>,
    /// The same, by model, for lookups that must not allocate (the hot path).
    simple_by_model: HashMap<String, Vec<SimpleEntry>, ByName>,
    pub(crate) cached_fks: Vec<CachedForeignKey>,
}

impl Registry {
    pub(crate) fn add_model(&mut self, info: ModelInfo) -> Result<(), RegistryError> {
        if !is_plain_name(&info.name) {
            return Err(RegistryError::InvalidName {
                name: info.name,
                reason: "model names are [A-Za-z0-9_] without \"__\"",
            });
        }
        self.models.insert(info.name.clone(), info);
        Ok(())
    }

    pub(crate) fn add_class(
        &mut self,
        spec: Arc<ClassSpec>,
        handle: Arc<dyn Any + Send + Sync>,
    ) -> Result<(), RegistryError> {
        if !is_plain_name(&spec.name) {
            return Err(RegistryError::InvalidName {
                name: spec.name.clone(),
                reason: "class names are 1 to 64 of [A-Za-z0-9_] without \"__\"",
            });
        }
        if let Some(&i) = self.names.get(&spec.name) {
            return Err(RegistryError::DuplicateClass {
                name: spec.name.clone(),
                first: self.classes[i].describe(),
                second: spec.describe(),
            });
        }
        if spec.key_fields.is_empty() {
            return Err(RegistryError::InvalidClass {
                class: spec.name.clone(),
                reason: "no key fields".into(),
            });
        }
        let set: BTreeSet<String> = spec.key_fields.iter().cloned().collect();
        if set.len() != spec.key_fields.len() {
            return Err(RegistryError::InvalidClass {
                class: spec.name.clone(),
                reason: "a key field is named twice".into(),
            });
        }
        if spec.simple {
            let k = (spec.model.clone(), spec.kind, set);
            if self.simple.contains_key(&k) {
                return Err(RegistryError::DuplicateKeyTuple {
                    model: spec.model.clone(),
                    kind: spec.kind.label(),
                    fields: spec.key_fields.clone(),
                });
            }
            self.simple_by_model
                .entry(spec.model.clone())
                .or_default()
                .push((spec.kind, spec.key_fields.clone(), handle.clone()));
            self.simple.insert(k, handle);
        }
        self.names.insert(spec.name.clone(), self.classes.len());
        self.classes.push(spec);
        Ok(())
    }

    /// Checks what can only be checked once everything is declared.
    pub(crate) fn validate(&self) -> Result<(), RegistryError> {
        for fk in &self.cached_fks {
            let pk = self
                .models
                .get(&fk.target)
                .map(|m| m.pk.clone())
                .unwrap_or_default();
            let ok = !pk.is_empty()
                && self
                    .simple_handle(&fk.target, CacheKind::Instance, &pk)
                    .is_some();
            if !ok {
                return Err(RegistryError::CachedForeignKeyWithoutTarget {
                    model: fk.model.clone(),
                    field: fk.field.clone(),
                    target: fk.target.clone(),
                    pk,
                });
            }
        }
        Ok(())
    }

    /// The simple class of `model` keyed by exactly `fields`, in any order
    /// (key fields are distinct, so equal length and containment is equality).
    pub(crate) fn simple_handle<S: AsRef<str>>(
        &self,
        model: &str,
        kind: CacheKind,
        fields: &[S],
    ) -> Option<&Arc<dyn Any + Send + Sync>> {
        self.simple_by_model
            .get(model)?
            .iter()
            .find_map(|(k, f, h)| {
                let same = *k == kind
                    && f.len() == fields.len()
                    && fields.iter().all(|x| f.iter().any(|y| y == x.as_ref()));
                same.then_some(h)
            })
    }

    pub(crate) fn classes_of_model<'a>(
        &'a self,
        model: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ClassSpec>> + 'a {
        self.classes.iter().filter(move |c| c.model == model)
    }
}
