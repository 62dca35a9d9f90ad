//! Roles, coarse permissions and the resource-level rules of the organisation (users, PODs).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{PodId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Manager,
    Developer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Developer => "developer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "developer" => Some(Role::Developer),
            _ => None,
        }
    }

    /// Whether the role may be listed among a POD's managers.
    pub fn can_manage_pods(self) -> bool {
        matches!(self, Role::Admin | Role::Manager)
    }
}

/// Coarse, role-level permissions checked by the `Require<P>` extractor before a handler runs.
/// Resource-level checks (which POD, whose request) are the functions below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Create and change users, PODs, managers; unlock accounts.
    AdministerOrg,
    /// Read the audit log.
    ReadAudit,
}

impl Permission {
    pub fn allows(self, role: Role) -> bool {
        match self {
            Permission::AdministerOrg | Permission::ReadAudit => role == Role::Admin,
        }
    }
}

/// Who is acting, as the domain rules need to know it.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: UserId,
    pub role: Role,
    pub home_pod: Option<PodId>,
    pub managed_pods: Vec<PodId>,
}

impl Actor {
    /// The PODs the actor belongs to: their home POD and those they manage.
    pub fn pods(&self) -> Vec<PodId> {
        let mut pods = self.managed_pods.clone();
        pods.extend(self.home_pod);
        pods.sort();
        pods.dedup();
        pods
    }

    /// Whether the actor may use an instance allowed for `allowed` PODs (admins: any).
    pub fn may_use_instance(&self, allowed: &[PodId]) -> bool {
        self.role == Role::Admin || self.pods().iter().any(|p| allowed.contains(p))
    }

    /// Whether the actor may file requests on behalf of a POD (admins: any).
    pub fn may_file_for(&self, pod: PodId) -> bool {
        self.role == Role::Admin || self.pods().contains(&pod)
    }

    /// Whether the actor may see a POD (and its members): admins see all, managers the PODs they
    /// manage and their own, developers their home POD. Anything else must look absent (404).
    pub fn can_view_pod(&self, pod: PodId) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Manager => self.managed_pods.contains(&pod) || self.home_pod == Some(pod),
            Role::Developer => self.home_pod == Some(pod),
        }
    }
}

/// Why an admin change to a user is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserChangeRefusal {
    /// The change would leave no active admin.
    LastAdmin,
    /// Admins may not disable or demote themselves (another admin must).
    SelfLockout,
}

/// Rules for an admin changing a user's role or disabling them.
pub fn check_user_change(
    actor: UserId,
    target: UserId,
    target_role: Role,
    new_role: Option<Role>,
    disable: bool,
    active_admins: u64,
) -> Result<(), UserChangeRefusal> {
    let demoted = target_role == Role::Admin && new_role.is_some_and(|r| r != Role::Admin);
    if (demoted || disable) && actor == target {
        return Err(UserChangeRefusal::SelfLockout);
    }
    if target_role == Role::Admin && (demoted || disable) && active_admins <= 1 {
        return Err(UserChangeRefusal::LastAdmin);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(role: Role, home: Option<PodId>, managed: Vec<PodId>) -> Actor {
        Actor {
            id: UserId::new(),
            role,
            home_pod: home,
            managed_pods: managed,
        }
    }

    #[test]
    fn pod_visibility_table() {
        let (a, b) = (PodId::new(), PodId::new());
        let cases = [
            (actor(Role::Admin, None, vec![]), a, true),
            (actor(Role::Manager, None, vec![a]), a, true),
            (actor(Role::Manager, None, vec![a]), b, false),
            (actor(Role::Manager, Some(b), vec![a]), b, true),
            (actor(Role::Developer, Some(a), vec![]), a, true),
            (actor(Role::Developer, Some(a), vec![]), b, false),
            (actor(Role::Developer, None, vec![]), a, false),
        ];
        for (i, (who, pod, expected)) in cases.iter().enumerate() {
            assert_eq!(who.can_view_pod(*pod), *expected, "case {i}");
        }
    }

    #[test]
    fn pods_instances_and_filing() {
        let (a, b, c) = (PodId::new(), PodId::new(), PodId::new());
        let manager = actor(Role::Manager, Some(a), vec![b, a]);
        assert_eq!(manager.pods().len(), 2);
        assert!(manager.may_use_instance(&[c, b]));
        assert!(!manager.may_use_instance(&[c]));
        assert!(!manager.may_use_instance(&[]));
        assert!(manager.may_file_for(b) && !manager.may_file_for(c));
        let dev = actor(Role::Developer, Some(a), vec![]);
        assert!(dev.may_file_for(a) && !dev.may_file_for(b));
        let admin = actor(Role::Admin, None, vec![]);
        assert!(admin.may_use_instance(&[]) && admin.may_file_for(c));
    }

    #[test]
    fn permissions_are_admin_only() {
        for p in [Permission::AdministerOrg, Permission::ReadAudit] {
            assert!(p.allows(Role::Admin));
            assert!(!p.allows(Role::Manager));
            assert!(!p.allows(Role::Developer));
        }
    }

    #[test]
    fn user_change_rules() {
        let (me, other) = (UserId::new(), UserId::new());
        assert_eq!(
            check_user_change(me, me, Role::Admin, Some(Role::Developer), false, 3),
            Err(UserChangeRefusal::SelfLockout)
        );
        assert_eq!(
            check_user_change(me, me, Role::Admin, None, true, 3),
            Err(UserChangeRefusal::SelfLockout)
        );
        assert_eq!(
            check_user_change(me, other, Role::Admin, None, true, 1),
            Err(UserChangeRefusal::LastAdmin)
        );
        assert_eq!(
            check_user_change(me, other, Role::Admin, None, true, 2),
            Ok(())
        );
        assert_eq!(
            check_user_change(me, other, Role::Developer, None, true, 1),
            Ok(())
        );
        assert_eq!(
            check_user_change(me, me, Role::Admin, Some(Role::Admin), false, 1),
            Ok(())
        );
    }
}
