//! Credentials for provider APIs: Microsoft Entra ID access tokens (shared by Azure Resource
//! Manager and Microsoft Fabric).

pub mod entra;
