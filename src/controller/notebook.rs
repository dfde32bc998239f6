//! Reconciler of `NotebookTokenRequest`.

use crate::api::NotebookTokenRequest;
use crate::api::notebook_token_request::NotebookTokenRequestStatus;
use crate::controller::error::Error;
use crate::controller::secret::{check_ownership, secret_name};
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::azure_cloud;
use crate::providers::endpoint::Service;
use async_trait::async_trait;
use kube::ResourceExt;
use std::sync::Arc;

/// Everything checked before calling Azure.
pub async fn validate(obj: &NotebookTokenRequest, ctx: &Context) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    validate::positive("spec.renewBefore", spec.renew_before.as_ref())?;
    let cloud = azure_cloud::endpoints(spec.azure.cloud);
    validate::endpoint(
        ctx,
        Service::AzureResourceManager,
        "spec.endpoint",
        spec.endpoint.as_deref(),
        cloud.resource_manager,
    )?;
    validate::azure(ctx, &ns, "spec.azure", &spec.azure).await?;
    Ok(())
}

#[async_trait]
impl Reconciler for NotebookTokenRequest {
    async fn sync(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> Result<Synced<NotebookTokenRequestStatus>, Error> {
        validate(&obj, &ctx).await?;
        let name = secret_name(obj.as_ref(), obj.spec.secret_name.as_deref());
        check_ownership(&ctx, obj.as_ref(), &name).await?;
        Err(Error::NotImplemented("Azure Machine Learning"))
    }

    async fn preview(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> Result<Preview<NotebookTokenRequestStatus>, Error> {
        validate(&obj, &ctx).await?;
        Err(Error::NotImplemented("Azure Machine Learning"))
    }
}
