//! Reconciler of `WorkspaceView`.

use crate::api::WorkspaceView;
use crate::api::workspace_view::{InventorySource, WorkspaceViewStatus};
use crate::controller::credentials::read_key;
use crate::controller::error::Error;
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::azure_cloud::FABRIC_ENDPOINT;
use crate::providers::endpoint::Service;
use async_trait::async_trait;
use kube::ResourceExt;
use std::sync::Arc;

/// Default DataRobot API endpoint.
pub const DATAROBOT_ENDPOINT: &str = "https://app.datarobot.com/api/v2";

/// Everything checked before calling the provider.
pub async fn validate(obj: &WorkspaceView, ctx: &Context) -> Result<InventorySource, Error> {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    validate::positive("spec.refreshInterval", spec.refresh_interval.as_ref())?;
    if !(1..=crate::api::workspace_view::MAX_MAX_ITEMS).contains(&spec.max_items) {
        return Err(Error::InvalidSpec(format!(
            "spec.maxItems must be between 1 and {}, got {}",
            crate::api::workspace_view::MAX_MAX_ITEMS,
            spec.max_items
        )));
    }
    let source = spec.source().map_err(Error::InvalidSpec)?;
    match &source {
        InventorySource::Fabric(f) => {
            validate::endpoint(
                ctx,
                Service::Fabric,
                "spec.fabric.endpoint",
                f.endpoint.as_deref(),
                FABRIC_ENDPOINT,
            )?;
            validate::azure(ctx, &ns, "spec.fabric.azure", &f.azure).await?;
        }
        InventorySource::DataRobot(d) => {
            d.selection().map_err(Error::InvalidSpec)?;
            validate::endpoint(
                ctx,
                Service::DataRobot,
                "spec.dataRobot.endpoint",
                d.endpoint.as_deref(),
                DATAROBOT_ENDPOINT,
            )?;
            read_key(ctx.secrets.as_ref(), &ns, &d.api_token_ref).await?;
        }
    }
    Ok(source)
}

#[async_trait]
impl Reconciler for WorkspaceView {
    async fn sync(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Synced<WorkspaceViewStatus>, Error> {
        match validate(&obj, &ctx).await? {
            InventorySource::Fabric(_) => Err(Error::NotImplemented("Microsoft Fabric")),
            InventorySource::DataRobot(_) => Err(Error::NotImplemented("DataRobot")),
        }
    }

    async fn preview(
        obj: Arc<Self>,
        ctx: Arc<Context>,
    ) -> Result<Preview<WorkspaceViewStatus>, Error> {
        match validate(&obj, &ctx).await? {
            InventorySource::Fabric(_) => Err(Error::NotImplemented("Microsoft Fabric")),
            InventorySource::DataRobot(_) => Err(Error::NotImplemented("DataRobot")),
        }
    }
}
