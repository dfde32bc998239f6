//! Reconciler of `LivyToken`.

use crate::api::LivyToken;
use crate::api::livy_token::LivyTokenStatus;
use crate::controller::error::Error;
use crate::controller::secret::{check_ownership, secret_name};
use crate::controller::{Context, Preview, Reconciler, Synced, validate};
use crate::providers::endpoint::Service;
use async_trait::async_trait;
use kube::ResourceExt;
use std::sync::Arc;

/// Default EMR Serverless Spark endpoint of a region.
pub fn default_endpoint(region_id: &str) -> String {
    format!("https://emr-serverless-spark.{region_id}.aliyuncs.com")
}

/// Everything checked before calling Alibaba Cloud.
pub async fn validate(obj: &LivyToken, ctx: &Context) -> Result<(), Error> {
    let ns = obj.namespace().unwrap_or_default();
    let spec = &obj.spec;
    spec.mode().map_err(Error::InvalidSpec)?;
    validate::positive("spec.renewBefore", spec.renew_before.as_ref())?;
    validate::positive("spec.refreshInterval", spec.refresh_interval.as_ref())?;
    if let Some(m) = &spec.managed {
        validate::positive("spec.managed.gracePeriod", m.grace_period.as_ref())?;
    }
    validate::endpoint(
        ctx,
        Service::EmrServerlessSpark,
        "spec.endpoint",
        spec.endpoint.as_deref(),
        &default_endpoint(&spec.region_id),
    )?;
    validate::alibaba(ctx, &ns, &spec.alibaba)?;
    if let Some(r) = &spec.alibaba.access_key_ref {
        let id = crate::api::SecretKeyRef {
            name: r.name.clone(),
            key: r.access_key_id_key.clone(),
        };
        let secret = crate::api::SecretKeyRef {
            name: r.name.clone(),
            key: r.access_key_secret_key.clone(),
        };
        crate::controller::credentials::read_key(ctx.secrets.as_ref(), &ns, &id).await?;
        crate::controller::credentials::read_key(ctx.secrets.as_ref(), &ns, &secret).await?;
    }
    Ok(())
}

#[async_trait]
impl Reconciler for LivyToken {
    async fn sync(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Synced<LivyTokenStatus>, Error> {
        validate(&obj, &ctx).await?;
        let name = secret_name(obj.as_ref(), obj.spec.secret_name.as_deref());
        check_ownership(&ctx, obj.as_ref(), &name).await?;
        Err(Error::NotImplemented("EMR Serverless Spark"))
    }

    async fn preview(obj: Arc<Self>, ctx: Arc<Context>) -> Result<Preview<LivyTokenStatus>, Error> {
        validate(&obj, &ctx).await?;
        Err(Error::NotImplemented("EMR Serverless Spark"))
    }
}
