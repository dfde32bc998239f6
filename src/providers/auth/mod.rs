//! Credentials for provider APIs: Microsoft Entra ID access tokens (shared by Azure Resource
//! Manager and Microsoft Fabric), Alibaba Cloud ACS3 request signing and STS (RRSA).

pub mod acs3;
pub mod entra;
pub mod sts;
