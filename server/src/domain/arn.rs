//! IAM role ARNs: `arn:<partition>:iam::<12-digit account>:role/<optional path/>name`.
//!
//! Rules from <https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html>:
//! role names are 1-64 characters of `[\w+=,.@-]`; paths start and end with `/` and hold
//! printable ASCII; the whole ARN is at most 2048 characters.

use lanyard_api::string_newtype;

use super::ParseError;

const PARTITIONS: [&str; 5] = ["aws", "aws-cn", "aws-us-gov", "aws-iso", "aws-iso-b"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn(String);

impl RoleArn {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let err = |why: &str| ParseError::new(format!("role_arn is not an IAM role ARN: {why}"));
        if raw.len() > 2048 {
            return Err(err("longer than 2048 characters"));
        }
        let mut parts = raw.splitn(6, ':');
        let (
            Some("arn"),
            Some(partition),
            Some(service),
            Some(region),
            Some(account),
            Some(resource),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return Err(err("expected arn:<partition>:iam::<account>:role/<name>"));
        };
        if !PARTITIONS.contains(&partition) {
            return Err(err("unknown partition"));
        }
        if service != "iam" {
            return Err(err("service must be 'iam'"));
        }
        if !region.is_empty() {
            return Err(err("IAM ARNs have an empty region field"));
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err("account must be 12 digits"));
        }
        let Some(path_and_name) = resource.strip_prefix("role/") else {
            return Err(err("resource must start with 'role/'"));
        };
        let (path, name) = match path_and_name.rfind('/') {
            Some(i) => (&path_and_name[..=i], &path_and_name[i + 1..]),
            None => ("", path_and_name),
        };
        if !path.is_empty() && !path.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(err("role path holds invalid characters"));
        }
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
        if !name_ok {
            return Err(err(
                "role name must be 1-64 characters of [A-Za-z0-9_+=,.@-]",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The 12-digit account that owns the role.
    pub fn account_id(&self) -> &str {
        self.0.split(':').nth(4).unwrap_or_default()
    }
}
string_newtype!(RoleArn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_role_arns_parse() {
        for ok in [
            "arn:aws:iam::111122223333:role/LanyardAccess",
            "arn:aws:iam::111122223333:role/service-role/path/Name_1+=,.@-",
            "arn:aws-us-gov:iam::111122223333:role/X",
        ] {
            assert!(RoleArn::parse(ok).is_ok(), "{ok}");
        }
        let arn = RoleArn::parse("arn:aws:iam::111122223333:role/LanyardAccess");
        assert_eq!(
            arn.map(|a| a.account_id().to_owned()),
            Ok("111122223333".to_owned())
        );
    }

    #[test]
    fn malformed_role_arns_are_rejected() {
        for bad in [
            "",
            "arn:aws:iam::11112222333:role/X",
            "arn:aws:iam::111122223333:user/X",
            "arn:aws:s3:::bucket",
            "arn:aws:iam:us-east-1:111122223333:role/X",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam::111122223333:role/bad name",
            "arn:foo:iam::111122223333:role/X",
            "arn:aws:iam::abcdefghijkl:role/X",
        ] {
            assert!(RoleArn::parse(bad).is_err(), "{bad}");
        }
        let long = format!("arn:aws:iam::111122223333:role/{}", "a".repeat(65));
        assert!(RoleArn::parse(&long).is_err());
    }
}
