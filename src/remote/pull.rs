//! Pulling a branch: refs and commit metadata first, then the signed
//! statement, verified before any content is fetched, then only the
//! objects missing here, many at once, each checked against its digest
//! before it enters the store. Objects are published in batches, so an
//! interrupted pull keeps what arrived; the branch moves last.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use gix::ObjectId;
use sha2::{Digest as _, Sha256};

use super::batches::Batches;
use super::fetch::Fetcher;
use super::{Remote, RemoteError};
use crate::erofs::{self, ImageOptions};
use crate::fsverity::Digest;
use crate::objects::Staging;
use crate::repo::{CommitMeta, Repo, RepoError};
use crate::sign;
use crate::tree::{FileType, Tree};

/// Bounds on git objects, checked as they are inflated: a commit is a
/// header and a message, a tree names two blobs, meta.json is a few
/// lines. A dumpfile is bounded by the size its commit's meta.json
/// records, or for commits made before it was recorded by the fallback.
const COMMIT_LIMIT: u64 = 1 << 20;
const TREE_LIMIT: u64 = 4096;
const META_LIMIT: u64 = 1 << 20;
pub(super) const DUMP_FALLBACK_LIMIT: u64 = 256 << 20;

/// How to pull.
#[derive(Default)]
pub struct PullOptions<'a> {
    /// Requests in flight at once (0: 8).
    pub jobs: usize,
    /// Only find out whether there is something new; fetch no content.
    pub check_only: bool,
    /// Objects fetched; hidden unless on a terminal.
    pub progress: Option<&'a indicatif::ProgressBar>,
    /// Take a commit older than one this repository has seen.
    pub allow_downgrade: bool,
    /// Take an expired index (air-gapped machines, old media).
    pub allow_expired: bool,
    /// Fetch objects whole even when the index lists a delta.
    pub no_deltas: bool,
}

impl PullOptions<'_> {
    /// Requests (or delta parts) in flight at once.
    fn jobs(&self) -> usize {
        if self.jobs == 0 {
            8
        } else {
            self.jobs
        }
    }
}

/// What a pull did.
#[derive(Debug)]
pub struct PullReport {
    pub commit: ObjectId,
    /// The local ref before the pull.
    pub previous: Option<ObjectId>,
    pub objects_fetched: u64,
    pub bytes_fetched: u64,
    /// Objects the commit needs that were already here.
    pub objects_present: u64,
    pub signed_by: String,
    pub image_digest: String,
    /// The signed index the commit was named by: published, expires.
    pub index: Option<(i64, i64)>,
    /// The static delta used (`FROM-TO`), the objects rebuilt from it and
    /// the bytes fetched of it (counted in `bytes_fetched` too).
    pub delta: Option<(String, u64, u64)>,
    /// A delta that was listed but not used, and why: the objects were
    /// fetched whole instead.
    pub delta_fallback: Option<String>,
}

/// A version of `branch` this repository has seen that `version` (of
/// `commit`) may not replace, and where: any remote's ref of the branch,
/// the local branch, any deployment. A pull from any remote may not go
/// below it (ostree refuses an upgrade older than the booted deployment),
/// so a second remote, a mirror serving an old signed commit, cannot
/// stage a downgrade, whatever line of history that commit is on: a
/// vendor's abandoned line is old releases too. Nor may it name another
/// commit for a version seen already. What this remote pulled before
/// counts whatever key signed it (keys rotate); anything else counts
/// only if its statement verifies against this remote's keys: another
/// vendor's branch of the same name is no floor.
fn conflicting_seen(
    repo: &Repo,
    remote: &Remote,
    branch: &str,
    version: u64,
    commit: ObjectId,
) -> Result<Option<String>, RemoteError> {
    let history = repo.history()?;
    let mut seen: Vec<(ObjectId, String, bool)> = Vec::new();
    for (name, _) in super::list(repo)? {
        if let Some(c) = history.remote_ref(&name, branch)? {
            seen.push((c, format!("pulled from remote {name}"), name == remote.name));
        }
    }
    if let Ok(Some(c)) = history.branch(branch) {
        seen.push((c, "the local branch".to_string(), false));
    }
    for (id, c) in history.deployment_refs()? {
        seen.push((c, format!("deployed as {id}"), false));
    }
    let mut worst: Option<(u64, String)> = None;
    for (seen_commit, place, own) in seen {
        let Some(stored) = repo.stored_statement(seen_commit)? else {
            continue;
        };
        let (text_path, sig_path) = repo.statement_paths(seen_commit);
        let statement = stored
            .parse()
            .map_err(|e| RemoteError::Invalid(format!("{}: {e}", text_path.display())))?;
        if statement.branch != branch {
            continue;
        }
        let ours = own
            || sign::verify(
                &stored.text,
                &text_path,
                &stored.signature,
                &sig_path,
                &remote.trusted,
            )
            .is_ok();
        if !ours {
            continue;
        }
        let conflict = if statement.version > version {
            format!(
                "older than version {}, {place} (commit {seen_commit}): a downgrade",
                statement.version
            )
        } else if statement.version == version && seen_commit != commit {
            format!(
                "not the commit of version {version} {place} (commit {seen_commit}): two commits for one version"
            )
        } else {
            continue;
        };
        if worst.as_ref().is_none_or(|(v, _)| statement.version > *v) {
            worst = Some((statement.version, conflict));
        }
    }
    Ok(worst.map(|(_, c)| c))
}

/// Pull `branch` of `remote` into `refs/remotes/REMOTE/BRANCH`.
pub fn pull(
    repo: &Repo,
    remote: &Remote,
    branch: &str,
    options: &PullOptions,
) -> Result<PullReport, RemoteError> {
    let _lock = repo.lock()?;
    let history = repo.history()?;
    let fetcher = Fetcher::new(
        &remote.config.url,
        Duration::from_secs(remote.config.timeout_secs),
        remote.ca.as_deref(),
    )?;
    let previous = history.remote_ref(&remote.name, branch)?;

    // 1. The branch's commit, from the signed index.
    let tip = super::index::branch_tip(repo, remote, &fetcher, branch, options.allow_expired)?;
    let commit = tip.commit;

    // 2. The signed statement, before any content: it must name this
    // commit on this branch, signed by a key trusted for this remote.
    let text_path = format!("signatures/{commit}.json");
    let sig_path = format!("signatures/{commit}.sig");
    let text = fetcher.get(&text_path, 1 << 20)?;
    let sig = fetcher.get(&sig_path, 1 << 20)?;
    let (statement, key) = sign::verify(
        &text,
        fetcher.url(&text_path).as_ref(),
        &sig,
        fetcher.url(&sig_path).as_ref(),
        &remote.trusted,
    )?;
    if statement.commit.parse::<ObjectId>().ok() != Some(commit) || statement.branch != branch {
        return Err(RemoteError::Invalid(format!(
            "{}: the statement is for {} on '{}', the branch names {commit} on '{branch}'",
            fetcher.url(&text_path),
            statement.commit,
            statement.branch
        )));
    }
    if let Some(indexed) = &tip.indexed {
        let digest = hex::encode(Sha256::digest(&text));
        if digest != indexed.statement || statement.version != indexed.version {
            return Err(RemoteError::Invalid(format!(
                "{}: not the statement the signed index names (version {}, sha256 {}), but version {}, sha256 {digest}",
                fetcher.url(&text_path),
                indexed.version,
                indexed.statement,
                statement.version
            )));
        }
    }
    // A statement of a lower epoch would let older releases boot again
    // on machines that take their epoch from it: refused before any
    // content is fetched.
    if let Some(before) = repo.stored_statement(commit)?.and_then(|s| s.parse().ok()) {
        if before.epoch > statement.epoch {
            return Err(RemoteError::Invalid(format!(
                "{}: commit {commit} is signed here with epoch {}; a statement of epoch {} does not replace it",
                fetcher.url(&text_path),
                before.epoch,
                statement.epoch
            )));
        }
    }
    if !options.allow_downgrade {
        if let Some(conflict) = conflicting_seen(repo, remote, branch, statement.version, commit)? {
            return Err(RemoteError::Invalid(format!(
                "{}: version {} of '{branch}' (commit {commit}) is {conflict}; refused (--allow-downgrade to take it)",
                fetcher.url(&text_path),
                statement.version
            )));
        }
    }
    let signed_by = key.encoded();

    // A static delta from a commit here, if the index lists one; its
    // first part holds the commit's dumpfile, rebuilt before the history
    // is fetched so that it is not fetched whole.
    let mut delta_fallback = None;
    let mut delta_spent = 0;
    let mut delta = None;
    if !options.check_only && !options.no_deltas {
        if let Some((name, entry)) =
            super::delta_pull::choose(repo, &tip.deltas, branch, &statement.image_digest, previous)?
        {
            match super::delta_pull::DeltaPull::start(repo, &fetcher, &name, &entry) {
                Ok(mut d) => match d.rebuild_dump(repo, &fetcher) {
                    Ok(()) => delta = Some(d),
                    Err(e) => {
                        delta_fallback = Some(format!("delta {name}: {e}"));
                        delta_spent = d.bytes();
                    }
                },
                Err(e) => delta_fallback = Some(format!("delta {name}: {e}")),
            }
        }
    }

    // 3. Commit metadata: git objects, each checked against its id.
    let tree = fetch_history(repo, &fetcher, commit)?;
    let mut report = PullReport {
        commit,
        previous,
        objects_fetched: 0,
        bytes_fetched: 0,
        objects_present: 0,
        signed_by,
        image_digest: statement.image_digest.clone(),
        index: tip.indexed.as_ref().map(|i| (i.published, i.expires)),
        delta: None,
        delta_fallback,
    };
    if options.check_only {
        return Ok(report);
    }

    // The dumpfile must be the signed one: its image has the signed digest.
    let meta = history.info(commit)?.meta;
    let plan = erofs::plan_image(
        &tree,
        &ImageOptions {
            min_version: meta.format_version,
            max_version: meta.format_version,
        },
    )
    .map_err(RepoError::from)?;
    let image =
        crate::compose::write_image_temp(&plan, &repo.images_dir()).map_err(RepoError::from)?;
    let digest = hex::encode(image.digest);
    if digest != statement.image_digest || digest != meta.image_digest {
        return Err(RemoteError::Invalid(format!(
            "commit {commit} from {}: its image has digest {digest}, the signed statement names {}",
            remote.config.url, statement.image_digest
        )));
    }

    // 4. Content: only what is missing.
    let present = repo
        .objects()
        .digests()
        .map_err(|e| RemoteError::Invalid(format!("{}: {e}", repo.objects().root().display())))?;
    let wanted = needed_objects(&tree);
    let mut needed: Vec<(Digest, u64)> = wanted.iter().map(|(d, s)| (*d, *s)).collect();
    needed.sort();
    let total = needed.len();
    needed.retain(|(d, _)| !present.contains(d));
    report.objects_present = (total - needed.len()) as u64;
    drop(present);
    // What a delta does not rebuild, whatever the reason, is fetched whole.
    if let Some(mut d) = delta {
        if let Err(e) = d.apply(repo, &fetcher, &wanted, options.jobs()) {
            report.delta_fallback = Some(format!("delta {}: {e}", d.name()));
        }
        report.delta = Some((d.name().to_string(), d.rebuilt(), d.bytes()));
        delta_spent = d.bytes();
        let stored = repo.objects().lookup();
        needed.retain(|(d, _)| !stored.contains(d));
    }
    report.bytes_fetched = delta_spent;
    fetch_objects(repo, &fetcher, &needed, options, &mut report)?;

    // 5. Image, statement, and only then the ref.
    let image_path = repo.image_path(&image.digest);
    if !image_path.exists() {
        image.persist(&image_path).map_err(RepoError::from)?;
    }
    repo.store_statement(commit, &text, &sig)?;
    repo.sync()?;
    if previous != Some(commit) {
        history.set_remote_ref(&remote.name, branch, commit, previous)?;
    }
    repo.sync()?;
    // Complete only once a ref holds it: a complete commit that no ref
    // named could lose its objects to prune, then come back as an
    // ancestor of a later pull, unchecked.
    repo.set_partial(commit, false)?;
    super::delta_pull::clear_incoming(repo);
    Ok(report)
}

/// Fetch the commit and its ancestors' metadata until one is here
/// already; returns the commit's tree. Ancestors are marked partial: their
/// history is here, their content is not. Commits are stored oldest
/// first, each after its tree and blobs, so a commit that is here always
/// has all its history here, however a pull was interrupted.
fn fetch_history(repo: &Repo, fetcher: &Fetcher, tip: ObjectId) -> Result<Tree, RemoteError> {
    let history = repo.history()?;
    let mut missing = Vec::new();
    let mut next = Some(tip);
    while let Some(id) = next.take() {
        if history.has_object(id) {
            if id != tip {
                mark_incomplete_history(repo, id)?;
            }
            break;
        }
        let commit = fetch_git(fetcher, id, gix::objs::Kind::Commit, COMMIT_LIMIT)?;
        let decoded = gix::objs::CommitRef::from_bytes(&commit, gix::hash::Kind::Sha1)
            .map_err(|e| RemoteError::Invalid(format!("{}: {e}", git_url(fetcher, id))))?;
        let tree_id = decoded.tree();
        next = decoded.parents().next();
        drop(decoded);
        missing.push((id, tree_id, commit));
    }
    for (id, tree_id, commit) in missing.into_iter().rev() {
        let tree = fetch_git(fetcher, tree_id, gix::objs::Kind::Tree, TREE_LIMIT)?;
        let entries = gix::objs::TreeRef::from_bytes(&tree, gix::hash::Kind::Sha1)
            .map_err(|e| RemoteError::Invalid(format!("{}: {e}", git_url(fetcher, tree_id))))?;
        let blob_id = |name: &str| {
            entries
                .entries
                .iter()
                .find(|e| e.filename == name)
                .map(|e| e.oid.to_owned())
                .ok_or_else(|| {
                    RemoteError::Invalid(format!(
                        "{}: commit {id} has no {name}",
                        git_url(fetcher, tree_id)
                    ))
                })
        };
        if entries.entries.len() != 2 {
            return Err(RemoteError::Invalid(format!(
                "{}: a commit's tree holds dump and meta.json, not {} entries",
                git_url(fetcher, tree_id),
                entries.entries.len()
            )));
        }
        // meta.json first: it bounds the dumpfile.
        let (meta_id, dump_id) = (blob_id("meta.json")?, blob_id("dump")?);
        let meta = match history.has_object(meta_id) {
            true => history.blob(meta_id)?,
            false => fetch_git(fetcher, meta_id, gix::objs::Kind::Blob, META_LIMIT)?,
        };
        let dump_limit = serde_json::from_slice::<CommitMeta>(&meta)
            .map_err(|e| RemoteError::Invalid(format!("{}: {e}", git_url(fetcher, meta_id))))?
            .dump_size;
        let dump_limit = if dump_limit == 0 {
            DUMP_FALLBACK_LIMIT
        } else {
            dump_limit
        };
        if !history.has_object(dump_id) {
            let dump = fetch_git(fetcher, dump_id, gix::objs::Kind::Blob, dump_limit)?;
            history.write_raw(gix::objs::Kind::Blob, &dump)?;
        }
        if !history.has_object(meta_id) {
            history.write_raw(gix::objs::Kind::Blob, &meta)?;
        }
        history.write_raw(gix::objs::Kind::Tree, &tree)?;
        // Until its content is complete, a commit is partial.
        repo.set_partial(id, true)?;
        history.write_raw(gix::objs::Kind::Commit, &commit)?;
    }
    Ok(repo.tree(tip)?)
}

/// The history a pull builds on is here, but its content need not be: a
/// commit no ref held may have lost objects to prune. Such commits (from
/// `start` back to one a ref protects) are marked partial, so nothing
/// takes them for complete.
fn mark_incomplete_history(repo: &Repo, start: ObjectId) -> Result<(), RemoteError> {
    let history = repo.history()?;
    let protected: HashSet<ObjectId> = history.reachable(&[])?.into_iter().collect();
    let present = repo
        .objects()
        .digests()
        .map_err(|e| RemoteError::Invalid(format!("{}: {e}", repo.objects().root().display())))?;
    let mut next = Some(start);
    while let Some(id) = next.take() {
        if !history.has_object(id) || repo.is_partial(id) {
            break;
        }
        let complete = needed_objects(&repo.tree(id)?)
            .keys()
            .all(|d| present.contains(d));
        if complete && protected.contains(&id) {
            break;
        }
        if !complete {
            repo.set_partial(id, true)?;
        }
        next = history.info(id)?.parents.first().copied();
    }
    Ok(())
}

fn git_url(fetcher: &Fetcher, id: ObjectId) -> String {
    let hex = id.to_string();
    fetcher.url(&format!("git/objects/{}/{}", &hex[..2], &hex[2..]))
}

/// A loose git object, inflated and checked: its kind, a size of at most
/// `limit` (checked before the body is read, and the body read no
/// further), and its id.
fn fetch_git(
    fetcher: &Fetcher,
    id: ObjectId,
    kind: gix::objs::Kind,
    limit: u64,
) -> Result<Vec<u8>, RemoteError> {
    let hex = id.to_string();
    let path = format!("git/objects/{}/{}", &hex[..2], &hex[2..]);
    let url = fetcher.url(&path);
    let bad = |what: String| RemoteError::Invalid(format!("{url}: {what}"));
    let mut inflated = BufReader::new(flate2::read::ZlibDecoder::new(fetcher.open(&path)?));
    let mut header = Vec::new();
    (&mut inflated)
        .take(32)
        .read_until(0, &mut header)
        .map_err(|e| bad(format!("not a zlib stream: {e}")))?;
    let header = header
        .strip_suffix(b"\0")
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or_else(|| bad("no git object header".into()))?;
    let size = header
        .strip_prefix(&format!("{kind} "))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| bad(format!("header '{header}', expected a {kind}")))?;
    if size > limit {
        return Err(bad(format!(
            "a {kind} of {size} bytes, more than the {limit} it may have here"
        )));
    }
    let mut body = Vec::with_capacity(size.min(1 << 20) as usize);
    inflated
        .take(size + 1)
        .read_to_end(&mut body)
        .map_err(|e| bad(format!("not a zlib stream: {e}")))?;
    if body.len() as u64 != size {
        return Err(bad(format!(
            "{} bytes after a header of {size}",
            body.len()
        )));
    }
    let actual = gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, &body)
        .map_err(|e| bad(e.to_string()))?;
    if actual != id {
        return Err(bad(format!("content hashes to {actual}, not {id}")));
    }
    Ok(body)
}

/// Digests of the contents a tree keeps outside its image, and their
/// sizes.
fn needed_objects(tree: &Tree) -> HashMap<Digest, u64> {
    tree.inodes
        .iter()
        .filter(|i| i.file_type() == Some(FileType::Regular) && i.size > 0 && i.content.is_none())
        .filter_map(|i| Some((i.digest?, i.size)))
        .collect()
}

/// Fetch `needed` with `jobs` workers, each with connections of its own,
/// taking the next object as soon as it is done with one (no barrier
/// between groups of objects: one large file does not idle the others).
fn fetch_objects(
    repo: &Repo,
    fetcher: &Fetcher,
    needed: &[(Digest, u64)],
    options: &PullOptions,
    report: &mut PullReport,
) -> Result<(), RemoteError> {
    if let Some(bar) = options.progress {
        bar.set_length(needed.len() as u64);
    }
    let store_err = |e: std::io::Error| {
        RemoteError::Invalid(format!("{}: {e}", repo.objects().root().display()))
    };
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let bytes = AtomicU64::new(0);
    let fetched = AtomicU64::new(0);
    // At most one full batch waits while another is published.
    let (full, to_publish) = std::sync::mpsc::sync_channel(1);
    let batches = Batches::new(repo.objects(), full).map_err(store_err)?;
    let (published, workers) = std::thread::scope(|scope| {
        // Everything staged is published, on failure too: it was verified,
        // and the next pull resumes from it.
        let publisher = std::thread::Builder::new().spawn_scoped(scope, move || {
            to_publish
                .into_iter()
                .try_for_each(|batch: Staging| batch.commit().map(|_| ()))
        });
        let publisher = match publisher {
            Ok(publisher) => publisher,
            Err(e) => {
                let e = std::io::Error::other(format!("cannot start a publishing thread: {e}"));
                return (Err(e), Vec::new());
            }
        };
        let worker = || -> Result<(), RemoteError> {
            let fetcher = fetcher.with_own_connections();
            while !stop.load(Ordering::Relaxed) {
                let Some((digest, size)) = needed.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    break;
                };
                let staging = batches.staging();
                match fetch_object(&fetcher, &staging, digest, *size) {
                    Ok(len) => {
                        batches.added(staging).map_err(store_err)?;
                        fetched.fetch_add(1, Ordering::Relaxed);
                        let total = bytes.fetch_add(len, Ordering::Relaxed) + len;
                        if let Some(bar) = options.progress {
                            bar.inc(1);
                            bar.set_message(indicatif::HumanBytes(total).to_string());
                        }
                    }
                    Err(e) => {
                        batches.release(staging).map_err(store_err)?;
                        return Err(e);
                    }
                }
            }
            Ok(())
        };
        let workers: Vec<_> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..options.jobs())
                .map(|_| {
                    let spawned = std::thread::Builder::new().spawn_scoped(scope, || {
                        // When one worker ends, on an error or a panic, the
                        // others stop too (on success nothing is left).
                        let _stop = StopOnDrop(&stop);
                        worker()
                    });
                    if spawned.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    spawned
                })
                .collect();
            workers
                .into_iter()
                .map(|w| match w {
                    Ok(w) => w.join().unwrap_or_else(|panic| {
                        Err(RemoteError::Invalid(format!(
                            "a fetching thread failed: {}",
                            panic_message(&panic)
                        )))
                    }),
                    Err(e) => Err(RemoteError::Invalid(format!(
                        "cannot start a fetching thread: {e}"
                    ))),
                })
                .collect()
        });
        let handed_on = batches.finish();
        let published = publisher.join().expect("publishing does not panic");
        (published.and(handed_on), workers)
    });
    report.objects_fetched += fetched.into_inner();
    report.bytes_fetched += bytes.into_inner();
    // A failed publish stops the workers ("publishing stopped"), and says
    // why itself: its error comes first.
    published.map_err(store_err)?;
    workers.into_iter().collect()
}

/// Sets the flag it holds when dropped: when its worker ends, however.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a panic said, if it said it in words.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic")
}

/// Fetch one object into `staging`, checked against its digest and the
/// size the signed tree names; its length.
fn fetch_object(
    fetcher: &Fetcher,
    staging: &Staging,
    digest: &Digest,
    size: u64,
) -> Result<u64, RemoteError> {
    let hex = hex::encode(digest);
    let path = format!("objects/{}/{}", &hex[..2], &hex[2..]);
    let url = fetcher.url(&path);
    // Read no further than the size the signed tree names: a longer body
    // is refused, not written out in full.
    let mut body = fetcher.open(&path)?.take(size + 1);
    let len = staging
        .add_expected(&mut body, digest)
        .map_err(|e| RemoteError::Invalid(format!("{url}: {e}")))?;
    if body.limit() == 0 {
        return Err(RemoteError::Invalid(format!(
            "{url}: object {hex} is longer than the {size} bytes the signed tree names; not stored"
        )));
    }
    len.map_err(|actual| {
        RemoteError::Invalid(format!(
            "{url}: object {hex} has digest {}; not stored",
            hex::encode(actual)
        ))
    })
}
