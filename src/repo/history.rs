//! Commit history in a bare git repository, through gix: one git commit per
//! OS commit, whose tree holds the dumpfile (`dump`) and `meta.json`;
//! branches are `refs/heads/*`, so plain git can inspect the history.

use std::collections::HashSet;
use std::io;
use std::path::Path;

use gix::bstr::ByteSlice;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};
use gix::refs::Target;
use gix::ObjectId;

use super::dump_blob::DumpFile;
use super::meta::CommitMeta;
use super::{git_err, RepoError};

const DUMP: &str = "dump";
const META: &str = "meta.json";
const IDENTITY: (&str, &str) = ("sealtree", "sealtree@localhost");

/// The git side of a repository.
pub struct History {
    repo: gix::Repository,
}

/// A commit's header and metadata.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub id: ObjectId,
    pub parents: Vec<ObjectId>,
    /// Commit time, seconds since the epoch.
    pub time: i64,
    pub message: String,
    pub meta: CommitMeta,
}

impl History {
    pub fn open(git_dir: &Path) -> Result<History, RepoError> {
        // Isolated: no user or system git configuration changes behaviour.
        let repo = gix::open_opts(git_dir, gix::open::Options::isolated()).map_err(git_err)?;
        Ok(History { repo })
    }

    /// The commit a branch points to, if the branch exists.
    pub fn branch(&self, branch: &str) -> Result<Option<ObjectId>, RepoError> {
        let name = branch_ref(branch)?;
        match self
            .repo
            .try_find_reference(name.as_str())
            .map_err(git_err)?
        {
            Some(mut r) => Ok(Some(r.peel_to_id().map_err(git_err)?.detach())),
            None => Ok(None),
        }
    }

    /// A commit named by id, unique id prefix or branch.
    pub fn resolve(&self, spec: &str) -> Result<ObjectId, RepoError> {
        if let Ok(Some(id)) = self.branch(spec) {
            return Ok(id);
        }
        let id = self
            .repo
            .rev_parse_single(spec)
            .map_err(|_| RepoError::Invalid(format!("no commit or branch named '{spec}'")))?;
        let commit = id
            .object()
            .map_err(git_err)?
            .peel_to_commit()
            .map_err(|_| RepoError::Invalid(format!("'{spec}' does not name a commit")))?;
        Ok(commit.id)
    }

    /// Store a dumpfile as a blob, unless it is stored already.
    pub fn store_dump(&self, dump: &DumpFile) -> Result<(), RepoError> {
        use gix::objs::Write as _;
        if self.repo.has_object(dump.id) {
            return Ok(());
        }
        let mut file = io::BufReader::new(dump.reopen().map_err(git_err)?);
        let written = self
            .repo
            .objects
            .write_stream(gix::objs::Kind::Blob, dump.len, &mut file)
            .map_err(git_err)?;
        if written != dump.id {
            return Err(RepoError::Invalid(format!(
                "the dumpfile changed while it was stored ({written}, not {})",
                dump.id
            )));
        }
        Ok(())
    }

    /// Write a commit object (not yet on any branch) of `meta` and the
    /// dumpfile blob `dump_id`, which must be stored.
    pub fn write_commit(
        &self,
        dump_id: ObjectId,
        meta: &CommitMeta,
        message: &str,
        parent: Option<ObjectId>,
        time: i64,
    ) -> Result<ObjectId, RepoError> {
        let meta_json =
            serde_json::to_vec_pretty(meta).map_err(|e| RepoError::Invalid(e.to_string()))?;
        let meta_id = self.repo.write_blob(&meta_json).map_err(git_err)?.detach();
        let mut tree = gix::objs::Tree::empty();
        tree.entries.push(gix::objs::tree::Entry {
            mode: gix::objs::tree::EntryKind::Blob.into(),
            filename: DUMP.into(),
            oid: dump_id,
        });
        tree.entries.push(gix::objs::tree::Entry {
            mode: gix::objs::tree::EntryKind::Blob.into(),
            filename: META.into(),
            oid: meta_id,
        });
        let tree_id = self.repo.write_object(&tree).map_err(git_err)?.detach();
        let signature = gix::actor::Signature {
            name: IDENTITY.0.into(),
            email: IDENTITY.1.into(),
            time: gix::date::Time {
                seconds: time,
                offset: 0,
            },
        };
        let mut message = message.trim_end().to_string();
        message.push('\n');
        let commit = gix::objs::Commit {
            tree: tree_id,
            parents: parent.into_iter().collect(),
            author: signature.clone(),
            committer: signature,
            encoding: None,
            message: message.into(),
            extra_headers: Vec::new(),
        };
        Ok(self.repo.write_object(&commit).map_err(git_err)?.detach())
    }

    /// Point `branch` at `new`, provided it still points at `old` (or does
    /// not exist when `old` is `None`), so concurrent updates cannot be lost.
    pub fn set_branch(
        &self,
        branch: &str,
        new: ObjectId,
        old: Option<ObjectId>,
    ) -> Result<(), RepoError> {
        self.update_ref(&branch_ref(branch)?, new, old, "sealtree commit")
    }

    /// Point the ref `name` at `new`, provided it still points at `old`
    /// (or does not exist when `old` is `None`).
    fn update_ref(
        &self,
        name: &str,
        new: ObjectId,
        old: Option<ObjectId>,
        message: &str,
    ) -> Result<(), RepoError> {
        let expected = match old {
            Some(old) => PreviousValue::MustExistAndMatch(Target::Object(old)),
            None => PreviousValue::MustNotExist,
        };
        self.repo
            .edit_reference(RefEdit {
                change: Change::Update {
                    log: LogChange {
                        mode: RefLog::AndReference,
                        force_create_reflog: false,
                        message: message.into(),
                    },
                    expected,
                    new: Target::Object(new),
                },
                name: name.try_into().map_err(git_err)?,
                deref: false,
            })
            .map_err(git_err)?;
        Ok(())
    }

    /// Delete a branch.
    pub fn delete_branch(&self, branch: &str) -> Result<(), RepoError> {
        let name = branch_ref(branch)?;
        self.repo
            .edit_reference(RefEdit {
                change: Change::Delete {
                    expected: PreviousValue::MustExist,
                    log: RefLog::AndReference,
                },
                name: name.as_str().try_into().map_err(git_err)?,
                deref: false,
            })
            .map_err(git_err)?;
        Ok(())
    }

    pub fn info(&self, id: ObjectId) -> Result<CommitInfo, RepoError> {
        let commit = self.repo.find_commit(id).map_err(git_err)?;
        let decoded = commit.decode().map_err(git_err)?;
        let parents = decoded.parents().collect();
        let time = decoded
            .committer()
            .map_err(git_err)?
            .time()
            .map_err(git_err)?
            .seconds;
        let message = decoded.message.to_str_lossy().trim_end().to_string();
        let meta_bytes = self.file(id, META)?;
        let meta = serde_json::from_slice(&meta_bytes)
            .map_err(|e| RepoError::Invalid(format!("commit {id}: {META}: {e}")))?;
        Ok(CommitInfo {
            id,
            parents,
            time,
            message,
            meta,
        })
    }

    /// The dumpfile recorded in a commit.
    pub fn dump(&self, id: ObjectId) -> Result<Vec<u8>, RepoError> {
        self.file(id, DUMP)
    }

    /// The blob id of the dumpfile recorded in a commit.
    pub fn dump_id(&self, id: ObjectId) -> Result<ObjectId, RepoError> {
        self.entry_id(id, DUMP)
    }

    fn entry_id(&self, id: ObjectId, name: &str) -> Result<ObjectId, RepoError> {
        let commit = self.repo.find_commit(id).map_err(git_err)?;
        let tree = commit.tree().map_err(git_err)?;
        let entry = tree
            .find_entry(name)
            .ok_or_else(|| RepoError::Invalid(format!("commit {id} has no {name}")))?;
        Ok(entry.oid().to_owned())
    }

    fn file(&self, id: ObjectId, name: &str) -> Result<Vec<u8>, RepoError> {
        self.blob(self.entry_id(id, name)?)
    }

    /// The bytes of blob `id`.
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, RepoError> {
        Ok(self.repo.find_blob(id).map_err(git_err)?.data.clone())
    }

    /// Branches and the commits they point to, by name.
    pub fn branches(&self) -> Result<Vec<(String, ObjectId)>, RepoError> {
        let platform = self.repo.references().map_err(git_err)?;
        let mut out = Vec::new();
        for r in platform.local_branches().map_err(git_err)? {
            let mut r = r.map_err(git_err)?;
            let name = r.name().shorten().to_str_lossy().into_owned();
            let id = r.peel_to_id().map_err(git_err)?.detach();
            out.push((name, id));
        }
        out.sort();
        Ok(out)
    }

    /// A commit and its first-parent ancestors, newest first.
    pub fn log(&self, start: ObjectId) -> Result<Vec<CommitInfo>, RepoError> {
        let mut out = Vec::new();
        let mut next = Some(start);
        while let Some(id) = next {
            let info = self.info(id)?;
            next = info.parents.first().copied();
            out.push(info);
        }
        Ok(out)
    }

    /// Keep `commit` alive for a deployment: `refs/sealtree/deploy/ID`.
    pub fn set_deployment_ref(&self, id: &str, commit: ObjectId) -> Result<(), RepoError> {
        self.repo
            .reference(
                deployment_ref(id)?.as_str(),
                commit,
                PreviousValue::Any,
                "sealtree deploy",
            )
            .map_err(git_err)?;
        Ok(())
    }

    pub fn delete_deployment_ref(&self, id: &str) -> Result<(), RepoError> {
        let name = deployment_ref(id)?;
        if self
            .repo
            .try_find_reference(name.as_str())
            .map_err(git_err)?
            .is_none()
        {
            return Ok(());
        }
        self.repo
            .edit_reference(RefEdit {
                change: Change::Delete {
                    expected: PreviousValue::Any,
                    log: RefLog::AndReference,
                },
                name: name.as_str().try_into().map_err(git_err)?,
                deref: false,
            })
            .map_err(git_err)?;
        Ok(())
    }

    /// `refs/remotes/REMOTE/BRANCH`, the last commit pulled.
    pub fn remote_ref(&self, remote: &str, branch: &str) -> Result<Option<ObjectId>, RepoError> {
        let name = remote_ref(remote, branch)?;
        match self
            .repo
            .try_find_reference(name.as_str())
            .map_err(git_err)?
        {
            Some(mut r) => Ok(Some(r.peel_to_id().map_err(git_err)?.detach())),
            None => Ok(None),
        }
    }

    /// Move `refs/remotes/REMOTE/BRANCH` from `old` to `new`.
    pub fn set_remote_ref(
        &self,
        remote: &str,
        branch: &str,
        new: ObjectId,
        old: Option<ObjectId>,
    ) -> Result<(), RepoError> {
        self.update_ref(&remote_ref(remote, branch)?, new, old, "sealtree pull")
    }

    pub fn has_object(&self, id: ObjectId) -> bool {
        self.repo.has_object(id)
    }

    /// Whether `id` is a loose object (readable over plain HTTP).
    pub fn is_loose(&self, id: ObjectId) -> bool {
        let hex = id.to_string();
        self.repo
            .path()
            .join("objects")
            .join(&hex[..2])
            .join(&hex[2..])
            .is_file()
    }

    /// Store an object given as its kind and bytes; returns its id.
    pub fn write_raw(&self, kind: gix::objs::Kind, data: &[u8]) -> Result<ObjectId, RepoError> {
        use gix::objs::Write;
        self.repo.objects.write_buf(kind, data).map_err(git_err)
    }

    /// Deployment ids and the commits their refs keep.
    pub fn deployment_refs(&self) -> Result<Vec<(String, ObjectId)>, RepoError> {
        let platform = self.repo.references().map_err(git_err)?;
        let mut out = Vec::new();
        for r in platform
            .prefixed("refs/sealtree/deploy/")
            .map_err(git_err)?
        {
            let mut r = r.map_err(git_err)?;
            let name = r.name().as_bstr().to_string();
            let id = r.peel_to_id().map_err(git_err)?.detach();
            if let Some(id_name) = name.strip_prefix("refs/sealtree/deploy/") {
                out.push((id_name.to_string(), id));
            }
        }
        Ok(out)
    }

    /// Every ref's target: branches and deployments.
    fn all_ref_targets(&self) -> Result<Vec<ObjectId>, RepoError> {
        let platform = self.repo.references().map_err(git_err)?;
        let mut out = Vec::new();
        for r in platform.all().map_err(git_err)? {
            let mut r = r.map_err(git_err)?;
            out.push(r.peel_to_id().map_err(git_err)?.detach());
        }
        Ok(out)
    }

    /// Every commit reachable from any branch or deployment (or from
    /// `extra` tips).
    pub fn reachable(&self, extra: &[ObjectId]) -> Result<Vec<ObjectId>, RepoError> {
        let mut seen = HashSet::new();
        let mut stack: Vec<ObjectId> = self.all_ref_targets()?;
        stack.extend_from_slice(extra);
        let mut out = Vec::new();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let commit = self.repo.find_commit(id).map_err(git_err)?;
            stack.extend(commit.decode().map_err(git_err)?.parents());
            out.push(id);
        }
        Ok(out)
    }
}

fn remote_ref(remote: &str, branch: &str) -> Result<String, RepoError> {
    let name = format!("refs/remotes/{remote}/{branch}");
    gix::validate::reference::name(name.as_bytes().as_bstr()).map_err(|e| {
        RepoError::Invalid(format!("invalid remote branch '{remote}/{branch}': {e}"))
    })?;
    Ok(name)
}

fn deployment_ref(id: &str) -> Result<String, RepoError> {
    let name = format!("refs/sealtree/deploy/{id}");
    gix::validate::reference::name(name.as_bytes().as_bstr())
        .map_err(|e| RepoError::Invalid(format!("invalid deployment id '{id}': {e}")))?;
    Ok(name)
}

/// `refs/heads/BRANCH`, refusing names git would refuse.
fn branch_ref(branch: &str) -> Result<String, RepoError> {
    gix::validate::reference::name_partial(branch.as_bytes().as_bstr())
        .map_err(|e| RepoError::Invalid(format!("invalid branch name '{branch}': {e}")))?;
    Ok(format!("refs/heads/{branch}"))
}
