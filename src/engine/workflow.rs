//! Workflows: created and versioned only with a definition that validates,
//! activated and deactivated; parsed definitions cached by version, and
//! workflows as starts read them for a second (dropped everywhere on a
//! change).

use std::sync::Arc;

use serde_json::Value as Json;
use uuid::Uuid;

use super::definition::Definition;
use super::invalidate::Change;
use super::{Engine, Error, Result};
use crate::store::{self, workflow::Workflow};

/// Longest workflow name, in characters.
pub const MAX_NAME: usize = 200;
/// Longest workflow description, in characters.
pub const MAX_DESCRIPTION: usize = 2000;

impl Engine {
    /// Validates `definition` and creates a workflow with it as version 1.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the step and field; store errors.
    pub async fn create_workflow(
        &self,
        account_id: Uuid,
        name: &str,
        description: Option<&str>,
        active: bool,
        definition: &Json,
    ) -> Result<Workflow> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.contains('\0') {
            return Err(Error::invalid(
                "name",
                format!("must be 1 to {MAX_NAME} characters, without NUL"),
            ));
        }
        if let Some(d) = description
            && (d.chars().count() > MAX_DESCRIPTION || d.contains('\0'))
        {
            return Err(Error::invalid(
                "description",
                format!("must be at most {MAX_DESCRIPTION} characters, without NUL"),
            ));
        }
        Definition::parse(definition)?;
        Ok(store::workflow::create(
            &self.pool,
            account_id,
            name,
            description,
            active,
            definition,
        )
        .await?)
    }

    /// Validates `definition` and adds it as the next version.
    ///
    /// # Errors
    /// [`Error::Invalid`], [`Error::WorkflowNotFound`], store errors.
    pub async fn add_version(
        &self,
        account_id: Uuid,
        workflow_id: Uuid,
        definition: &Json,
    ) -> Result<Workflow> {
        Definition::parse(definition)?;
        let w = store::workflow::add_version(&self.pool, account_id, workflow_id, definition)
            .await?
            .ok_or(Error::WorkflowNotFound)?;
        self.changed(Change::Workflow(workflow_id)).await;
        Ok(w)
    }

    /// Allows (`true`) or stops (`false`) new executions of a workflow;
    /// running ones go on.
    ///
    /// # Errors
    /// [`Error::WorkflowNotFound`]; [`Error::WorkflowArchived`] to activate
    /// an archived one; store errors.
    pub async fn set_active(&self, account_id: Uuid, id: Uuid, active: bool) -> Result<Workflow> {
        if active
            && store::workflow::get(&self.pool, account_id, id)
                .await?
                .ok_or(Error::WorkflowNotFound)?
                .archived_at
                .is_some()
        {
            return Err(Error::WorkflowArchived);
        }
        let w = store::workflow::set_active(&self.pool, account_id, id, active)
            .await?
            .ok_or(Error::WorkflowNotFound)?;
        self.changed(Change::Workflow(id)).await;
        Ok(w)
    }

    /// Archives a workflow: it starts nothing more and leaves the default
    /// listing; running executions go on; its versions stay readable.
    ///
    /// # Errors
    /// [`Error::WorkflowNotFound`], store errors.
    pub async fn archive_workflow(&self, account_id: Uuid, id: Uuid) -> Result<Workflow> {
        let w = store::workflow::archive(&self.pool, account_id, id)
            .await?
            .ok_or(Error::WorkflowNotFound)?;
        self.changed(Change::Workflow(id)).await;
        Ok(w)
    }

    /// The parsed definition of a version (cached).
    ///
    /// # Errors
    /// [`Error::VersionNotFound`]; [`Error::Invalid`] if the stored
    /// definition no longer validates (a newer engine's rules).
    pub async fn definition(&self, workflow_id: Uuid, version: i32) -> Result<Arc<Definition>> {
        if let Some(d) = self.definitions.get(&(workflow_id, version)) {
            return Ok(d);
        }
        let doc = store::workflow::definition(&self.pool, workflow_id, version)
            .await?
            .ok_or(Error::VersionNotFound)?;
        let def = Arc::new(Definition::parse(&doc)?);
        self.definitions
            .insert((workflow_id, version), Arc::clone(&def));
        Ok(def)
    }

    /// Workflow `id` of `account_id` as a start needs it (activation,
    /// latest version): cached for a second at most, dropped in every
    /// process when it changes.
    ///
    /// # Errors
    /// [`Error::WorkflowNotFound`], store errors.
    pub(super) async fn workflow_to_start(&self, account_id: Uuid, id: Uuid) -> Result<Workflow> {
        if let Some(w) = self.workflows.get(&id)
            && w.account_id == account_id
        {
            return Ok(w);
        }
        let w = store::workflow::get(&self.pool, account_id, id)
            .await?
            .ok_or(Error::WorkflowNotFound)?;
        self.workflows.insert(id, w.clone());
        Ok(w)
    }
}
