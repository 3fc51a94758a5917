// SPDX-License-Identifier: Apache-2.0
pragma solidity >=0.8.24 <0.9.0;

/// @title FedChain: one federated-learning task run as rounds with no coordinator
/// @notice Members record the digest of their model update, then vote, weighted by reputation,
/// for the aggregate they computed themselves. A candidate that reaches the quorum becomes the new
/// global model; a round whose windows run out fails and the previous model carries over.
/// @dev Digests are the sha256 inside a CIDv0 multihash. No function loops over members: the
/// reputation effect of a round is settled per member, pulled by that member's next transaction
/// (or by anyone through `settle`).
///
/// Quorum and absence. A candidate finalizes when the weight voting for it is at least
/// `quorumNumerator / quorumDenominator` (exactly, in integers) of the round's snapshotted total,
/// and that fraction is at least 1/2, so a minority of the counted reputation never finalizes.
/// Weights and the total are fixed at the round's start, as OpenZeppelin's Governor fixes them at
/// `proposalSnapshot`: each member's weight is its reputation when the round started (checkpointed
/// lazily, before its first change in the round), and the total is the sum of those weights over
/// members that are not dormant. A member is dormant in round r when it took part (submitted,
/// voted, committed or revealed) in none of the DORMANCY_ROUNDS rounds before r; deployment counts
/// as taking part in round 0. A dormant member weighs 0 and is not in the total, and when it takes
/// part again its reputation is halved (ABSENCE penalty) before it counts again, from the next round.
/// Liveness: while members holding up to 1 - quorum of the total stay away, the others finalize as
/// before; when more stay away, rounds fail for at most DORMANCY_ROUNDS rounds after their last
/// activity, and the round that starts DORMANCY_ROUNDS + 1 rounds after it counts only the members
/// that are present. The total stays exact without a loop: `_activity` keeps, per round of the last
/// DORMANCY_ROUNDS + 1, the summed reputation of the members last active in it; a member moves its
/// reputation to the current round's lane when it takes part, and a round's start drops the lane
/// that has just expired and snapshots the sum of the others.
///
/// Sealed updates (`updateRevealBlocks` > 0). During the submission window a member records only a
/// commitment keccak256(abi.encode(round, update, salt, submitter)) to its update digest, so no
/// update can be seen, fetched or copied before the window closes: an adaptive attacker cannot
/// craft its update from the honest ones. Once the window closes (its deadline passed, or every
/// member committed) an update-reveal window of `updateRevealBlocks` blocks opens, in which each
/// committer reveals (update, salt) with `revealUpdate`; the contract checks it against the
/// leading 19 bytes of the commitment, kept in the member's spare storage. Voting opens when that
/// window ends, or as soon as the submission window is closed and every committer has revealed.
/// A commitment never revealed leaves its member out of every honest aggregate, so it settles like
/// any excluded update (halved). The submitter is inside the hash, so a copied commitment cannot be
/// revealed by its copier, and revealing someone else's (update, salt) matches no commitment.
contract FedChain {
    // ------------------------------------------------------------------ reputation rule
    /// @notice Reputation every member starts with.
    uint32 public constant INITIAL_REPUTATION = 1_000;
    /// @notice Upper bound on any member's reputation.
    uint32 public constant MAX_REPUTATION = 10_000;
    /// @notice Gain when a member's update is part of the finalized aggregate.
    uint32 public constant INCLUSION_REWARD = 100;
    /// @notice Gain when a member voted in time for the candidate that was finalized: before the
    /// round finalized, or after it while the next round's submission window is still open. Which
    /// agreeing votes happened to form the first quorum is a race that a colluding team can win by
    /// voting first; it must not pay, so a vote that lands in the same window pays the same.
    uint32 public constant AGREEMENT_REWARD = 50;
    /// @notice Gain for a vote that agrees with the winner but arrived only after the next round's
    /// submission window closed. An honest member votes for round r before it submits for round
    /// r + 1 (the contract refuses the vote afterwards), so only a member that also missed that
    /// window gets here; voting this late still pays more than not voting.
    uint32 public constant LATE_AGREEMENT_REWARD = 25;
    /// @notice A member that took part in none of this many consecutive rounds is dormant: it
    /// weighs nothing and is left out of the quorum's total until it takes part again.
    uint256 public constant DORMANCY_ROUNDS = 3;
    /// @notice Maximum number of members: the included set is a 256-bit bitmap.
    uint256 public constant MAX_MEMBERS = 256;
    /// @notice Members registered per transaction. Registering one costs about 71,000 gas (93,000
    /// with commit-reveal votes), so a larger task is registered over several transactions
    /// (`admitMembers`) to stay under the 16,777,216 gas that one transaction may use on chains
    /// past the Osaka upgrade (EIP-7825).
    uint256 public constant MEMBERS_PER_TRANSACTION = 96;
    /// @notice How many past outcomes stay on-chain for settlement; a member that comes back
    /// after more rounds than this has its old round settled with no change.
    uint256 public constant OUTCOME_HISTORY = 64;

    // ------------------------------------------------------------------ types
    /// @notice Constructor arguments.
    struct Config {
        address[] members;
        bytes32 initialModel;
        bytes32 task;
        uint32 submitBlocks;
        uint32 voteBlocks;
        uint16 quorumNumerator; // quorum = quorumNumerator / quorumDenominator, at least 1/2
        uint16 quorumDenominator;
        uint32 maxRounds;
        uint8 rule;
        uint32 revealBlocks; // 0: plain votes; otherwise commit-reveal with a reveal window this long
        uint32 updateRevealBlocks; // 0: plain submissions; otherwise sealed updates, revealed in a window this long
    }

    /// @notice The winner of a round, as given back by `settle` callers.
    struct Outcome {
        bytes32 model;
        uint256 included;
    }

    /// @dev Two storage slots. The second holds the round-start checkpoint of the member's vote
    /// weight, its last activity and, in sealed-update tasks, the leading bytes of its update
    /// commitment of `submittedRound` until it is revealed (13 + 19 bytes: the slot is full).
    struct Member {
        uint32 reputation;
        uint32 submittedRound;
        uint32 votedRound;
        uint32 settledRound;
        uint16 slot; // index + 1; zero means not a member
        bytes12 voteKey; // leading bytes of keccak256(model, included) last voted for
        uint32 activeRound; // the last round in which the member took part (0: deployment)
        uint32 weightRound; // the round whose start `weight` records
        uint32 weight; // vote weight in `weightRound`: reputation at its start, 0 if dormant then
        bool lateVote; // the vote of `votedRound` arrived after that round finalized and the next round's submission window closed
        bytes19 seal; // leading bytes of the unrevealed update commitment of `submittedRound`; zero once revealed
    }

    struct Clock {
        uint32 round;
        uint64 startBlock;
        uint16 submissions;
        uint64 totalReputation; // the quorum's denominator, snapshotted at the round's start
        uint32 modelRound;
        uint16 commits;
        uint16 reveals; // sealed updates revealed in `round`
    }

    /// @dev The first candidate voted for in the latest round with votes, and its tally. Most
    /// rounds have one candidate, so its tally lives in this reused slot rather than in a new one.
    /// After finalization the slot holds the winner until the next round's first vote moves it to
    /// `_outcomes`.
    struct Lead {
        uint32 round;
        bytes20 key;
        uint64 weight; // top bit: this candidate won the round
    }

    /// @dev An ended round in the ring of recent outcomes.
    struct Archived {
        uint32 round;
        bytes20 key; // zero for a failed round
        uint8 status;
    }

    /// @notice What is known on-chain about how a round ended.
    enum Status {
        Unknown,
        Finalized,
        Failed,
        Open
    }

    /// @notice Phase of the current round.
    enum Phase {
        Submission,
        Voting,
        Expired,
        Complete,
        Reveal,
        UpdateReveal,
        Setup // members are still being registered (`admitMembers`); no round is open
    }

    // ------------------------------------------------------------------ errors
    /// @notice The caller is not on the task's member list.
    error FedChainNotMember(address peer);
    /// @notice The round has ended (finalized or failed); `current` is the open round.
    error FedChainRoundClosed(uint256 round, uint256 current);
    /// @notice The round has not started yet; `current` is the open round.
    error FedChainRoundNotOpen(uint256 round, uint256 current);
    /// @notice Every round of the task has ended.
    error FedChainTaskComplete(uint256 maxRounds);
    /// @notice The submission window of `round` closed at block `deadline`.
    error FedChainSubmissionClosed(uint256 round, uint256 deadline);
    /// @notice The peer already submitted an update in `round`.
    error FedChainAlreadySubmitted(uint256 round, address peer);
    /// @notice A zero digest names no artifact.
    error FedChainZeroDigest();
    /// @notice Voting for `round` opens at block `opensAt`, or once every member has submitted (in
    /// sealed tasks: once the submission window is closed and every committed update revealed).
    error FedChainVotingNotOpen(uint256 round, uint256 opensAt);
    /// @notice The voting window of `round` closed at block `deadline`.
    error FedChainVotingClosed(uint256 round, uint256 deadline);
    /// @notice The peer already voted in `round`.
    error FedChainAlreadyVoted(uint256 round, address peer);
    /// @notice The candidate's weight is below what the quorum requires.
    error FedChainQuorumNotReached(uint256 round, uint256 weight, uint256 required);
    /// @notice The current round can still receive submissions or votes until block `deadline`.
    error FedChainRoundStillOpen(uint256 round, uint256 deadline);
    /// @notice The outcome given for `round` is not the one that was finalized.
    error FedChainInvalidOutcome(uint256 round);
    /// @notice The constructor arguments are unusable; `reason` says which.
    error FedChainInvalidConfig(string reason);
    /// @notice This task uses commit-reveal voting: use `commitVote` and `revealVote`.
    error FedChainCommitRevealRequired();
    /// @notice This task uses plain votes: use `vote`.
    error FedChainCommitRevealDisabled();
    /// @notice Reveals for `round` open at block `opensAt` or once every member has committed.
    error FedChainRevealNotOpen(uint256 round, uint256 opensAt);
    /// @notice The peer has no unrevealed commitment for `round`.
    error FedChainNothingToReveal(uint256 round, address peer);
    /// @notice The revealed vote or update does not match the peer's commitment for `round`.
    error FedChainCommitmentMismatch(uint256 round, address peer);
    /// @notice Only `registered` of the task's `total` members are registered: no round is open yet.
    error FedChainMembershipIncomplete(uint256 registered, uint256 total);
    /// @notice Every member is registered already.
    error FedChainMembershipComplete();
    /// @notice The list given is not the one the deployment committed to for the members left.
    error FedChainNotPendingMembers();
    /// @notice This task takes plain submissions: there is no update to reveal.
    error FedChainSealedUpdatesDisabled();
    /// @notice Updates of `round` are revealed from block `opensAt` on, or once every member has committed.
    error FedChainUpdateRevealNotOpen(uint256 round, uint256 opensAt);
    /// @notice The update-reveal window of `round` closed at block `deadline` (or voting opened early).
    error FedChainUpdateRevealClosed(uint256 round, uint256 deadline);
    /// @notice The peer has no sealed update of `round` left to reveal (it committed none, or revealed it).
    error FedChainNoSealedUpdate(uint256 round, address peer);

    // ------------------------------------------------------------------ events
    /// @notice A member was admitted at deployment.
    event MemberRegistered(address indexed peer, uint256 index, uint256 reputation);
    /// @notice Round `round` opened on top of global model `baseModel`; zero means the previous
    /// round failed and its base carries over.
    event RoundStarted(uint256 indexed round, bytes32 baseModel);
    /// @notice A member recorded the digest of its update; `reputation` is its settled reputation,
    /// the weight honest aggregators give the update. The record binds the digest to its sender:
    /// the same digest sent by another member is that member's claim, not the author's.
    event UpdateSubmitted(uint256 indexed round, address indexed peer, bytes32 update, uint256 reputation);
    /// @notice A member committed to an update it will reveal after the submission window (sealed
    /// tasks): `commitment` is keccak256(abi.encode(round, update, salt, peer)).
    event UpdateCommitted(uint256 indexed round, address indexed peer, bytes32 commitment);
    /// @notice A member revealed the update it committed to (sealed tasks); `reputation` is its
    /// settled reputation, the weight honest aggregators give the update. Only revealed updates
    /// count in the round's aggregate.
    event UpdateRevealed(uint256 indexed round, address indexed peer, bytes32 update, uint256 reputation);
    /// @notice A member committed to a vote it will reveal later (commit-reveal tasks).
    event VoteCommitted(uint256 indexed round, address indexed peer, bytes32 commitment);
    /// @notice A member voted for aggregate `model` built from the members in bitmap `included`;
    /// `weight` is what the vote added to the tally (0 for a late vote).
    event VoteCast(uint256 indexed round, address indexed peer, bytes32 model, uint256 included, uint256 weight);
    /// @notice `model` became the global model; `weight` of the round's snapshotted
    /// `totalReputation` voted for it.
    event RoundFinalized(
        uint256 indexed round, bytes32 model, uint256 included, uint256 weight, uint256 totalReputation
    );
    /// @notice The windows of `round` ran out without a quorum; the previous model carries over.
    event RoundFailed(uint256 indexed round);
    /// @notice A member's reputation changed: settled for `round`, or, when `round` is the round
    /// in which a dormant member took part again, halved for its absence.
    event ReputationChanged(address indexed peer, uint256 indexed round, uint256 previous, uint256 current);
    /// @notice The last round of the task has ended; `model` is zero if that round failed.
    event TaskCompleted(uint256 rounds, bytes32 model);
    /// @notice A member put `digest` on record for `round` under `kind` (see `publish`).
    event Published(uint256 indexed round, address indexed peer, uint8 indexed kind, bytes32 digest);

    // ------------------------------------------------------------------ state
    uint256 private immutable _submitBlocks;
    uint256 private immutable _voteBlocks;
    uint256 private immutable _revealBlocks;
    uint256 private immutable _updateRevealBlocks;
    uint256 private immutable _quorumNumerator;
    uint256 private immutable _quorumDenominator;
    uint256 private immutable _maxRounds;
    uint256 private immutable _memberCount;
    uint256 private immutable _rule;
    bytes32 private immutable _task;
    uint256 private immutable _deployBlock;

    Clock private _clock;
    bytes32 private immutable _initialModel;
    Lead private _lead;
    Archived[OUTCOME_HISTORY] private _outcomes;
    /// @dev Lane `r % ACTIVITY_LANES` (64 bits each) holds the summed reputation of the members
    /// whose last activity was round r, for the last ACTIVITY_LANES rounds.
    uint256 private _activity;
    address[] private _memberList;
    /// @dev keccak256(abi.encode(members not registered yet)) while the task is being set up; zero after.
    bytes32 private _pendingMembers;
    mapping(address peer => Member) private _members;
    mapping(address peer => bytes32 commitment) private _commitments;
    mapping(uint256 round => mapping(bytes32 key => uint256 weight)) private _candidates;

    /// @param cfg Members, initial model digest, task digest, window lengths in blocks, the
    /// quorum as a fraction of the snapshotted total (at least 1/2, at most 1), number of rounds,
    /// aggregation rule id, the vote-reveal window (0: plain votes) and the update-reveal window
    /// (0: plain submissions).
    constructor(Config memory cfg) {
        uint256 n = cfg.members.length;
        if (n == 0 || n > MAX_MEMBERS) revert FedChainInvalidConfig("members");
        if (cfg.submitBlocks == 0 || cfg.voteBlocks == 0) revert FedChainInvalidConfig("windows");
        uint256 num = cfg.quorumNumerator;
        uint256 den = cfg.quorumDenominator;
        if (den == 0 || num > den || 2 * num < den) revert FedChainInvalidConfig("quorum");
        if (cfg.maxRounds == 0) revert FedChainInvalidConfig("rounds");
        if (cfg.initialModel == bytes32(0)) revert FedChainInvalidConfig("model");
        uint256 first = n < MEMBERS_PER_TRANSACTION ? n : MEMBERS_PER_TRANSACTION;
        for (uint256 i = 0; i < first; ++i) {
            _register(cfg.members[i], i, cfg.revealBlocks != 0);
        }
        _submitBlocks = cfg.submitBlocks;
        _voteBlocks = cfg.voteBlocks;
        _revealBlocks = cfg.revealBlocks;
        _updateRevealBlocks = cfg.updateRevealBlocks;
        _quorumNumerator = num;
        _quorumDenominator = den;
        _maxRounds = cfg.maxRounds;
        _memberCount = n;
        _rule = cfg.rule;
        _task = cfg.task;
        _deployBlock = block.number;
        _initialModel = cfg.initialModel;
        // Make every ring slot non-zero now, so that archiving an outcome later costs a reused
        // slot's price, paid at deployment instead of by a peer in some round.
        for (uint256 i = 0; i < OUTCOME_HISTORY; ++i) {
            _outcomes[i] = Archived(type(uint32).max, bytes20(0), uint8(Status.Unknown));
        }
        _lead = Lead(0, bytes20(0), 1);
        if (first == n) {
            _openFirstRound(n, cfg.initialModel);
        } else {
            address[] memory rest = new address[](n - first);
            for (uint256 i = first; i < n; ++i) {
                rest[i - first] = cfg.members[i];
            }
            _pendingMembers = keccak256(abi.encode(rest));
        }
    }

    // ------------------------------------------------------------------ setup
    /// @notice Register the next members of a task with more than MEMBERS_PER_TRANSACTION of them;
    /// the batch that registers the last one opens round 1. Anyone may call it: the deployment
    /// committed to the list, so the caller chooses nothing.
    /// @param remaining Every member not registered yet, in index order, as given at deployment.
    function admitMembers(address[] calldata remaining) external {
        bytes32 pending = _pendingMembers;
        if (pending == bytes32(0)) revert FedChainMembershipComplete();
        if (keccak256(abi.encode(remaining)) != pending) revert FedChainNotPendingMembers();
        uint256 count = remaining.length < MEMBERS_PER_TRANSACTION ? remaining.length : MEMBERS_PER_TRANSACTION;
        uint256 index = _memberList.length;
        for (uint256 i = 0; i < count; ++i) {
            _register(remaining[i], index + i, _revealBlocks != 0);
        }
        if (count < remaining.length) {
            _pendingMembers = keccak256(abi.encode(remaining[count:]));
        } else {
            _pendingMembers = bytes32(0);
            _openFirstRound(_memberCount, _initialModel);
        }
    }

    // ------------------------------------------------------------------ transactions
    /// @notice Record the digest of this member's update for `round` (or, in sealed tasks, a
    /// commitment to it), settling its previous round.
    /// @dev No uniqueness is enforced on digests: an update is bound to its sender by this record
    /// and by the `peer` its artifact names, so a copy sent by someone else earns its sender an
    /// exclusion and cannot block the author. In sealed tasks the leading 19 bytes of the
    /// commitment are kept for `revealUpdate` in the member's second storage slot, which this
    /// transaction writes anyway.
    /// @param round The round the update was trained for; must be the open round.
    /// @param update sha256 digest of the update artifact's root block (the CIDv0 multihash
    /// digest); in sealed tasks keccak256(abi.encode(round, digest, salt, msg.sender)) instead.
    /// @param previous The finalized outcome of the member's last unsettled round (zeros if none).
    function submit(uint256 round, bytes32 update, Outcome calldata previous) external {
        Member memory m = _loadMember(msg.sender);
        bool sealed_ = _updateRevealBlocks != 0;
        if (sealed_ ? bytes19(update) == bytes19(0) : update == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _openRound(_clock, round);
        if (block.number >= clock.startBlock + _submitBlocks) {
            revert FedChainSubmissionClosed(round, clock.startBlock + _submitBlocks);
        }
        if (m.submittedRound == round) revert FedChainAlreadySubmitted(round, msg.sender);

        _participate(m, msg.sender, round, round, previous);
        m.submittedRound = uint32(round);
        if (sealed_) m.seal = bytes19(update); // plain tasks never set it: it stays zero
        _members[msg.sender] = m;
        clock.submissions += 1;
        _clock = clock;
        if (sealed_) emit UpdateCommitted(round, msg.sender, update);
        else emit UpdateSubmitted(round, msg.sender, update, m.reputation);
    }

    /// @notice Reveal the update this member committed to in `round` (sealed tasks). Allowed once
    /// the submission window is closed (its deadline passed, or every member committed) and until
    /// voting opens; only revealed updates count in the round's aggregate.
    /// @dev Needs no settlement and no activity bookkeeping: the commitment of the same round did
    /// both, so the reveal counts as taking part through it. Writes the member's second slot and
    /// the clock, both already non-zero.
    /// @param round The open round, in which the member committed.
    /// @param update sha256 digest of the update artifact's root block (the CIDv0 multihash digest).
    /// @param salt The salt inside the commitment.
    function revealUpdate(uint256 round, bytes32 update, bytes32 salt) external {
        Member memory m = _loadMember(msg.sender);
        if (_updateRevealBlocks == 0) revert FedChainSealedUpdatesDisabled();
        if (update == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _openRound(_clock, round);
        uint256 closes = clock.startBlock + _submitBlocks;
        if (block.number < closes && clock.submissions < _memberCount) revert FedChainUpdateRevealNotOpen(round, closes);
        if (_votingOpen(clock)) revert FedChainUpdateRevealClosed(round, closes + _updateRevealBlocks);
        if (m.submittedRound != round || m.seal == bytes19(0)) revert FedChainNoSealedUpdate(round, msg.sender);
        if (bytes19(keccak256(abi.encode(round, update, salt, msg.sender))) != m.seal) {
            revert FedChainCommitmentMismatch(round, msg.sender);
        }
        m.seal = bytes19(0);
        _members[msg.sender] = m;
        clock.reveals += 1;
        _clock = clock;
        emit UpdateRevealed(round, msg.sender, update, m.reputation);
    }

    /// @notice Vote for the aggregate this member computed; finalizes the round on quorum.
    /// @dev A vote for the round that was just finalized is still recorded (it arrived in the
    /// same block as, or after, the deciding vote): it adds nothing to the tally. While the next
    /// round's submission window is open it is settled exactly like a timely vote (agreement earns
    /// AGREEMENT_REWARD), so a member gains nothing by racing to be in the deciding quorum; after
    /// that window agreement earns LATE_AGREEMENT_REWARD (`_isTardy`). Dissent is halved either way.
    /// If the member's round was already settled (by anyone), the late vote is settled at once, so
    /// settling first and voting afterwards neither forfeits nor escapes its effect.
    /// @param round The open round, or the just-finalized one.
    /// @param model Digest of the aggregate model artifact.
    /// @param included Bitmap of member indices whose updates the aggregate includes.
    /// @param previous The finalized outcome of the member's last unsettled round before `round`
    /// (zeros if none).
    function vote(uint256 round, bytes32 model, uint256 included, Outcome calldata previous) external {
        Member memory m = _loadMember(msg.sender);
        if (_revealBlocks != 0) revert FedChainCommitRevealRequired();
        if (model == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _clock;
        bool late = _isLate(clock, round);
        if (!late) {
            clock = _openRound(clock, round);
            _checkVotingOpen(clock);
        }
        if (m.votedRound == round) revert FedChainAlreadyVoted(round, msg.sender);
        // A late vote must not overwrite a vote already cast in a later round.
        if (m.submittedRound > round || m.votedRound > round) revert FedChainRoundClosed(round, clock.round);

        bytes32 key = _candidateKey(model, included);
        _participate(m, msg.sender, clock.round, round, previous);
        m.votedRound = uint32(round);
        m.voteKey = bytes12(key);
        m.lateVote = late && _isTardy(clock);
        if (late && m.settledRound >= round) _settleLateVote(m, msg.sender, round, clock.round);
        _members[msg.sender] = m;
        _count(clock, round, key, model, included, m.weight, late);
    }

    /// @notice Commit to a vote without showing it (commit-reveal tasks), settling the member's
    /// previous round. Nobody can copy a vote they cannot see.
    /// @param round The open round.
    /// @param commitment keccak256(abi.encode(round, model, included, salt, voter)).
    /// @param previous The finalized outcome of the member's last unsettled round (zeros if none).
    function commitVote(uint256 round, bytes32 commitment, Outcome calldata previous) external {
        Member memory m = _loadMember(msg.sender);
        if (_revealBlocks == 0) revert FedChainCommitRevealDisabled();
        if (commitment == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _openRound(_clock, round);
        _checkVotingOpen(clock);
        uint256 commitDeadline = _voteEnd(clock);
        if (block.number >= commitDeadline || clock.commits == _memberCount) {
            revert FedChainVotingClosed(round, commitDeadline);
        }
        if (m.votedRound == round) revert FedChainAlreadyVoted(round, msg.sender);

        _participate(m, msg.sender, round, round, previous);
        m.votedRound = uint32(round);
        m.voteKey = bytes12(0); // not revealed yet
        m.lateVote = false;
        _members[msg.sender] = m;
        _commitments[msg.sender] = commitment;
        clock.commits += 1;
        _clock = clock;
        emit VoteCommitted(round, msg.sender, commitment);
    }

    /// @notice Reveal a committed vote; counts like `vote` and finalizes the round on quorum.
    /// A vote never revealed counts as dissent when the round is settled.
    /// @dev As with `vote`, a reveal for the just-finalized round is late: recorded for
    /// reputation only (at the full rate while the next round's submission window is open, at the
    /// late rate after it), and settled at once if the round already was.
    /// @param round The round of the commitment: the open round, or the just-finalized one.
    /// @param model Digest of the aggregate model artifact committed to.
    /// @param included Bitmap of member indices committed to.
    /// @param salt The salt inside the commitment.
    function revealVote(uint256 round, bytes32 model, uint256 included, bytes32 salt) external {
        Member memory m = _loadMember(msg.sender);
        if (_revealBlocks == 0) revert FedChainCommitRevealDisabled();
        Clock memory clock = _clock;
        bool late = _isLate(clock, round);
        if (!late) {
            clock = _openRound(clock, round);
            uint256 opensAt = _voteEnd(clock);
            if (block.number < opensAt && clock.commits < _memberCount) revert FedChainRevealNotOpen(round, opensAt);
        }
        if (m.votedRound != round || m.voteKey != bytes12(0)) revert FedChainNothingToReveal(round, msg.sender);
        if (keccak256(abi.encode(round, model, included, salt, msg.sender)) != _commitments[msg.sender]) {
            revert FedChainCommitmentMismatch(round, msg.sender);
        }
        bytes32 key = _candidateKey(model, included);
        uint256 act = _activity;
        uint256 touched = _touch(m, msg.sender, clock.round, act);
        if (touched != act) _activity = touched;
        m.voteKey = bytes12(key);
        m.lateVote = late && _isTardy(clock);
        if (late && m.settledRound >= round) _settleLateVote(m, msg.sender, round, clock.round);
        _members[msg.sender] = m;
        // The commit checkpointed the member's weight of its round: m.weight is it.
        _count(clock, round, key, model, included, m.weight, late);
    }

    /// @notice Finalize a candidate whose votes reach the quorum.
    /// @dev Weights and the total are snapshots of the round's start, so a candidate short of the
    /// quorum at its last vote stays short; this remains for callers that verify a tally.
    /// Reverts with `FedChainQuorumNotReached` when the candidate is short of the quorum.
    /// @param round The open round.
    /// @param model Digest of the candidate aggregate.
    /// @param included Bitmap of the candidate.
    function finalize(uint256 round, bytes32 model, uint256 included) external {
        Clock memory clock = _openRound(_clock, round);
        _checkVotingOpen(clock);
        bytes32 key = _candidateKey(model, included);
        uint256 weight = _weightOf(round, key);
        if (!_quorumReached(weight, clock.totalReputation)) {
            revert FedChainQuorumNotReached(round, weight, _required(clock.totalReputation));
        }
        _finalize(clock, round, key, model, included, weight);
    }

    /// @notice Close the current round as failed once its voting window has run out.
    /// @dev Anyone may call; submissions and votes do the same implicitly.
    function advance() external {
        Clock memory clock = _clock;
        _checkSetUp(clock);
        if (clock.round > _maxRounds) revert FedChainTaskComplete(_maxRounds);
        uint256 deadline = _expiry(clock);
        if (block.number < deadline) revert FedChainRoundStillOpen(clock.round, deadline);
        _fail(clock);
    }

    /// @notice Put a digest on record, bound to the sender and `round`: the announcements of a
    /// protocol run on top of the rounds, such as secure aggregation's identity keys, masked
    /// updates and unmasking reveals. The contract gives them no meaning and keeps no state for
    /// them; peers read the `Published` logs and apply the task's rules to them, in chain order.
    /// @dev Kinds fedchain uses: 1 an X25519 identity key (round 0; the digest is the raw key),
    /// 2 a masked update artifact, 3 an unmasking reveal artifact (CIDv0 digests).
    /// @param round The round the record belongs to (0: the whole task).
    /// @param kind What the digest is.
    /// @param digest The record: a CIDv0 multihash digest, or a raw 32-byte key.
    function publish(uint256 round, uint8 kind, bytes32 digest) external {
        _checkMember(msg.sender);
        if (digest == bytes32(0)) revert FedChainZeroDigest();
        emit Published(round, msg.sender, kind, digest);
    }

    /// @notice Apply the reputation effect of `peer`'s last unsettled round. Anyone may call; the
    /// result is the one the member's own next transaction would apply, and a second call changes
    /// nothing. It does not count as the member taking part.
    /// @dev A committed vote of the just-finalized round that can still be revealed is not
    /// settled here, so that nobody can settle it as dissent ahead of its late reveal.
    /// @param peer The member to settle.
    /// @param previous That round's finalized outcome (zeros if it failed).
    function settle(address peer, Outcome calldata previous) external {
        Member memory m = _loadMember(peer);
        Clock memory clock = _clock;
        _checkSetUp(clock);
        if (_revealBlocks != 0 && m.voteKey == bytes12(0) && m.votedRound != 0 && _isLate(clock, m.votedRound)) return;
        _checkpoint(m, clock.round);
        uint256 act = _activity;
        uint256 settled = _settleInto(m, peer, previous, clock.round, act, clock.round);
        _members[peer] = m;
        if (settled != act) _activity = settled;
    }

    // ------------------------------------------------------------------ views
    /// @notice The task's configuration; the quorum is quorumNumerator / quorumDenominator of the
    /// round's snapshotted total.
    /// @return task Digest of the task description.
    /// @return submitBlocks Length of the submission window.
    /// @return voteBlocks Length of the voting (commit) window.
    /// @return quorumNumerator Numerator of the quorum fraction.
    /// @return quorumDenominator Denominator of the quorum fraction.
    /// @return maxRounds Number of rounds.
    /// @return memberCount Number of members.
    /// @return rule Aggregation rule id.
    /// @return deployBlock Block of deployment.
    /// @return revealBlocks Length of the reveal window (0: plain votes).
    /// @return updateRevealBlocks Length of the update-reveal window (0: plain submissions).
    function config()
        external
        view
        returns (
            bytes32 task,
            uint256 submitBlocks,
            uint256 voteBlocks,
            uint256 quorumNumerator,
            uint256 quorumDenominator,
            uint256 maxRounds,
            uint256 memberCount,
            uint256 rule,
            uint256 deployBlock,
            uint256 revealBlocks,
            uint256 updateRevealBlocks
        )
    {
        return (
            _task,
            _submitBlocks,
            _voteBlocks,
            _quorumNumerator,
            _quorumDenominator,
            _maxRounds,
            _memberCount,
            _rule,
            _deployBlock,
            _revealBlocks,
            _updateRevealBlocks
        );
    }

    /// @notice The open round, its phase and windows, as of the current block. `voteDeadline` is
    /// the block at which the round expires (after the reveal window in commit-reveal tasks). In
    /// sealed tasks phase `UpdateReveal` lies between `Submission` and `Voting`;
    /// `totalReputation` is the quorum's denominator, snapshotted at the round's start.
    /// @dev An expired round shows phase `Expired` until someone advances it.
    /// @return round The open round (maxRounds + 1 once the task is complete).
    /// @return phase Its phase at the current block.
    /// @return startBlock The block it started in.
    /// @return submitDeadline The block at which submissions close.
    /// @return voteDeadline The block at which it expires.
    /// @return submissions How many members submitted (in sealed tasks: committed) in it.
    /// @return totalReputation The quorum's denominator, snapshotted at its start.
    /// @return reveals How many sealed updates were revealed in it (0 in plain tasks).
    function roundState()
        external
        view
        returns (
            uint256 round,
            Phase phase,
            uint256 startBlock,
            uint256 submitDeadline,
            uint256 voteDeadline,
            uint256 submissions,
            uint256 totalReputation,
            uint256 reveals
        )
    {
        Clock memory c = _clock;
        round = c.round;
        startBlock = c.startBlock;
        submitDeadline = c.startBlock + _submitBlocks;
        voteDeadline = _expiry(c);
        submissions = c.submissions;
        totalReputation = c.totalReputation;
        reveals = c.reveals;
        if (c.round == 0) phase = Phase.Setup;
        else if (c.round > _maxRounds) phase = Phase.Complete;
        else if (block.number >= voteDeadline) phase = Phase.Expired;
        else if (_revealBlocks != 0 && (block.number >= _voteEnd(c) || c.commits == _memberCount)) phase = Phase.Reveal;
        else if (_votingOpen(c)) phase = Phase.Voting;
        else if (block.number >= submitDeadline || c.submissions == _memberCount) phase = Phase.UpdateReveal;
        else phase = Phase.Submission;
    }

    /// @notice The round that produced the current global model (0: the initial model) and the
    /// leading 20 bytes of its outcome key keccak256(abi.encode(model, included)).
    /// @dev The model digest itself is in that round's RoundFinalized event: storing it again
    /// would cost the finalizing voter a slot write every round. `outcomeOf` commits to it.
    /// @return round The round that produced the global model (0: the initial model).
    /// @return key The leading 20 bytes of that round's outcome key (zero for round 0).
    function globalModel() external view returns (uint256 round, bytes20 key) {
        round = _clock.modelRound;
        if (round != 0) (, key) = _outcome(round);
    }

    /// @notice The digest of the model the task started from.
    /// @return The initial model's digest.
    function initialModel() external view returns (bytes32) {
        return _initialModel;
    }

    /// @notice All members in index order.
    /// @return The member addresses; a member's index is its bit in `included` bitmaps.
    function members() external view returns (address[] memory) {
        return _memberList;
    }

    /// @notice A member's settled reputation and participation.
    /// @param peer The member.
    /// @return index Its index on the member list.
    /// @return reputation Its settled reputation.
    /// @return submittedRound The last round it submitted in.
    /// @return votedRound The last round it voted (or committed) in.
    /// @return settledRound The last round whose reputation effect it has been settled for.
    function memberInfo(address peer)
        external
        view
        returns (
            uint256 index,
            uint256 reputation,
            uint256 submittedRound,
            uint256 votedRound,
            uint256 settledRound
        )
    {
        _checkMember(peer);
        Member memory m = _members[peer];
        return (m.slot - 1, m.reputation, m.submittedRound, m.votedRound, m.settledRound);
    }

    /// @notice What `peer`'s vote counts in the open round: its reputation at the round's start,
    /// or 0 if it was dormant then; and the round of its last activity.
    /// @param peer The member.
    /// @return weight Its vote weight in the open round.
    /// @return activeRound The last round in which it took part (0: none since deployment).
    function voteWeight(address peer) external view returns (uint256 weight, uint256 activeRound) {
        Member memory m = _loadMember(peer);
        _checkpoint(m, _clock.round);
        return (m.weight, m.activeRound);
    }

    /// @notice The leading 19 bytes of `peer`'s update commitment of its last submitted round,
    /// while it is unrevealed (sealed tasks); zero once revealed, or if it never committed.
    /// @param peer The member.
    /// @return The unrevealed commitment's leading bytes, or zero.
    function updateSeal(address peer) external view returns (bytes19) {
        return _loadMember(peer).seal;
    }

    /// @notice The summed settled reputation of the members that are not dormant: what the next
    /// round's snapshot starts from (before the lane that expires then is dropped).
    /// @return The sum of the non-dormant members' settled reputations.
    function countedReputation() external view returns (uint256) {
        return _sumLanes(_activity);
    }

    /// @notice Vote weight counted for a candidate of `round` (the open round, or the latest
    /// round with votes; earlier tallies are not kept).
    /// @param round The round.
    /// @param model Digest of the candidate aggregate.
    /// @param included Bitmap of the candidate.
    /// @return The weight voted for it (0 if unknown).
    function candidateWeight(uint256 round, bytes32 model, uint256 included) external view returns (uint256) {
        return _weightOf(round, _candidateKey(model, included)) & ~_WINNER;
    }

    /// @notice How `round` ended and, if finalized, the leading 20 bytes of its winner's key
    /// keccak256(abi.encode(model, included)). `Unknown` for rounds that never existed or ended
    /// more than OUTCOME_HISTORY rounds ago (their events remain in the chain's logs).
    /// @param round The round.
    /// @return status How it ended, or `Open` / `Unknown`.
    /// @return key The leading 20 bytes of the winner's key, zero unless finalized.
    function outcomeOf(uint256 round) public view returns (Status status, bytes20 key) {
        if (round == 0 || round > _maxRounds) return (Status.Unknown, bytes20(0));
        if (round >= _clock.round) return (Status.Open, bytes20(0));
        return _outcome(round);
    }

    /// @notice Whether `round` ended with a finalized model (as far as `outcomeOf` knows).
    /// @param round The round.
    /// @return Whether it was finalized.
    function isFinalized(uint256 round) external view returns (bool) {
        (Status status,) = outcomeOf(round);
        return status == Status.Finalized;
    }

    /// @notice Whether `round` ended without a quorum (as far as `outcomeOf` knows).
    /// @param round The round.
    /// @return Whether it failed.
    function isFailed(uint256 round) external view returns (bool) {
        (Status status,) = outcomeOf(round);
        return status == Status.Failed;
    }

    /// @notice Whether (`model`, `included`) is the candidate that won `round`.
    /// @param round The round.
    /// @param model Digest of the candidate aggregate.
    /// @param included Bitmap of the candidate.
    /// @return Whether that candidate won `round`.
    function isOutcome(uint256 round, bytes32 model, uint256 included) external view returns (bool) {
        (Status status, bytes20 key) = outcomeOf(round);
        return status == Status.Finalized && key == bytes20(_candidateKey(model, included));
    }

    // ------------------------------------------------------------------ internals
    uint256 private constant _WINNER = 1 << 255;
    uint64 private constant _LEAD_WINNER = 1 << 63;

    /// @dev How an ended round finished: the lead slot if it still holds that round's winner,
    /// else the ring of recent outcomes.
    function _outcome(uint256 round) internal view returns (Status, bytes20) {
        Lead memory lead = _lead;
        if (lead.round == round && lead.weight & _LEAD_WINNER != 0) return (Status.Finalized, lead.key);
        Archived memory a = _outcomes[round % OUTCOME_HISTORY];
        if (a.round == round) return (Status(a.status), a.key);
        return (Status.Unknown, bytes20(0));
    }

    function _statusOf(uint256 round) internal view returns (Status status) {
        (status,) = _outcome(round);
    }

    function _weightOf(uint256 round, bytes32 key) internal view returns (uint256) {
        Lead memory lead = _lead;
        if (lead.round == round && lead.key == bytes20(key)) {
            return (lead.weight & _LEAD_WINNER != 0 ? _WINNER : 0) | (lead.weight & ~_LEAD_WINNER);
        }
        return _candidates[round][key];
    }

    /// @dev Adds `amount` to a candidate's tally and returns the new tally. The round's first
    /// vote takes over the lead slot, first archiving the winner it held.
    function _addWeight(uint256 round, bytes32 key, uint256 amount) internal returns (uint256 weight) {
        Lead memory lead = _lead;
        if (lead.round != round) {
            if (lead.weight & _LEAD_WINNER != 0) {
                _outcomes[lead.round % OUTCOME_HISTORY] = Archived(lead.round, lead.key, uint8(Status.Finalized));
            }
            _lead = Lead(uint32(round), bytes20(key), uint64(amount));
            return amount;
        }
        if (lead.key == bytes20(key)) {
            weight = lead.weight + amount;
            _lead.weight = uint64(weight);
            return weight;
        }
        weight = _candidates[round][key] + amount;
        _candidates[round][key] = weight;
    }

    function _checkMember(address peer) internal view {
        if (_members[peer].slot == 0) revert FedChainNotMember(peer);
    }

    function _loadMember(address peer) internal view returns (Member memory m) {
        m = _members[peer];
        if (m.slot == 0) revert FedChainNotMember(peer);
    }

    function _candidateKey(bytes32 model, uint256 included) internal pure returns (bytes32) {
        return keccak256(abi.encode(model, included));
    }

    /// @dev The least weight that reaches the quorum: ceil(total * numerator / denominator).
    function _required(uint256 total) internal view returns (uint256) {
        return (total * _quorumNumerator + _quorumDenominator - 1) / _quorumDenominator;
    }

    /// @dev weight / total >= numerator / denominator, exactly (2 of 3 equal members reach 2/3).
    function _quorumReached(uint256 weight, uint256 total) internal view returns (bool) {
        return total != 0 && (weight & ~_WINNER) * _quorumDenominator >= total * _quorumNumerator;
    }

    function _isLate(Clock memory clock, uint256 round) internal view returns (bool) {
        return round != 0 && round + 1 == clock.round && _statusOf(round) == Status.Finalized;
    }

    /// @dev Whether a late vote (or reveal) for the round before `clock.round` arrives after the
    /// open round's submission window: only then does agreement earn LATE_AGREEMENT_REWARD. An
    /// honest member sends its vote (or reveal) for the previous round before it submits for the
    /// open one, so it lands earlier; and a plain vote is refused once its member has submitted for
    /// the open round.
    /// @param clock The open round, the one after the voted round.
    function _isTardy(Clock memory clock) internal view returns (bool) {
        return block.number >= clock.startBlock + _submitBlocks;
    }

    /// @dev Emits the vote and, unless it is late, adds `weight` to the candidate and finalizes
    /// the round if that reaches the quorum.
    function _count(
        Clock memory clock,
        uint256 round,
        bytes32 key,
        bytes32 model,
        uint256 included,
        uint256 weight,
        bool late
    ) internal {
        emit VoteCast(round, msg.sender, model, included, late ? 0 : weight);
        if (late) return;
        uint256 tally = _addWeight(round, key, weight);
        if (_quorumReached(tally, clock.totalReputation)) _finalize(clock, round, key, model, included, tally);
    }

    // ------------------------------------------------------------------ activity and weights
    uint256 private constant _LANES = DORMANCY_ROUNDS + 1;
    uint256 private constant _LANE_MASK = type(uint64).max;

    function _lane(uint256 act, uint256 round) internal pure returns (uint256) {
        return (act >> ((round % _LANES) * 64)) & _LANE_MASK;
    }

    function _withLane(uint256 act, uint256 round, uint256 value) internal pure returns (uint256) {
        uint256 shift = (round % _LANES) * 64;
        return (act & ~(_LANE_MASK << shift)) | (value << shift);
    }

    function _sumLanes(uint256 act) internal pure returns (uint256 sum) {
        for (uint256 i = 0; i < _LANES; ++i) {
            sum += (act >> (i * 64)) & _LANE_MASK;
        }
    }

    function _isDormant(Member memory m, uint256 current) internal pure returns (bool) {
        return m.activeRound + DORMANCY_ROUNDS < current;
    }

    /// @dev Records the member's weight of round `current` before its reputation first changes
    /// in that round: its reputation then, or 0 if it was dormant at the round's start.
    function _checkpoint(Member memory m, uint256 current) internal pure {
        if (m.weightRound == current) return;
        m.weight = _isDormant(m, current) ? 0 : m.reputation;
        m.weightRound = uint32(current);
    }

    /// @dev Marks the member as taking part in round `current`: its reputation moves to that
    /// round's lane, after the absence penalty if it was dormant. Returns the new lanes.
    function _touch(Member memory m, address peer, uint256 current, uint256 act) internal returns (uint256) {
        _checkpoint(m, current);
        if (m.activeRound == current) return act;
        uint256 rep = m.reputation;
        if (_isDormant(m, current)) {
            uint256 halved = rep / 2;
            if (halved != rep) emit ReputationChanged(peer, current, rep, halved);
            m.reputation = uint32(halved);
            rep = halved;
        } else {
            act = _withLane(act, m.activeRound, _lane(act, m.activeRound) - rep);
        }
        m.activeRound = uint32(current);
        return _withLane(act, current, _lane(act, current) + rep);
    }

    /// @dev Takes part in `current` and settles the member's last unsettled round before `round`.
    function _participate(Member memory m, address peer, uint256 current, uint256 round, Outcome calldata previous)
        internal
    {
        uint256 act = _activity;
        uint256 next = _touch(m, peer, current, act);
        next = _settleInto(m, peer, previous, round, next, current);
        if (next != act) _activity = next;
    }

    /// @dev Sets the member's reputation for the effect of `round`, keeping its lane exact.
    function _changeReputation(
        Member memory m,
        address peer,
        uint256 round,
        uint256 rep,
        uint256 act,
        uint256 current
    ) internal returns (uint256) {
        uint256 before = m.reputation;
        if (rep == before) return act;
        if (!_isDormant(m, current)) {
            act = _withLane(act, m.activeRound, _lane(act, m.activeRound) + rep - before);
        }
        m.reputation = uint32(rep);
        emit ReputationChanged(peer, round, before, rep);
        return act;
    }

    /// @dev Applies a late vote for the finalized `round` at once, the round being settled already:
    /// agreement earns what `_settleInto` would have paid for it.
    function _settleLateVote(Member memory m, address peer, uint256 round, uint256 current) internal {
        (, bytes20 winner) = _outcome(round);
        uint256 rep = m.reputation;
        if (m.voteKey == bytes12(winner)) rep += m.lateVote ? LATE_AGREEMENT_REWARD : AGREEMENT_REWARD;
        else rep /= 2;
        if (rep > MAX_REPUTATION) rep = MAX_REPUTATION;
        uint256 act = _activity;
        uint256 next = _changeReputation(m, peer, round, rep, act, current);
        if (next != act) _activity = next;
    }

    /// @dev Loads the clock, fails an expired round first, and checks `round` is the open one.
    function _openRound(Clock memory clock, uint256 round) internal returns (Clock memory) {
        _checkSetUp(clock);
        if (clock.round <= _maxRounds && block.number >= _expiry(clock)) {
            _fail(clock);
            clock = _clock;
        }
        if (clock.round > _maxRounds) revert FedChainTaskComplete(_maxRounds);
        if (round < clock.round) revert FedChainRoundClosed(round, clock.round);
        if (round > clock.round) revert FedChainRoundNotOpen(round, clock.round);
        return clock;
    }

    /// @dev Reverts while members are still being registered (round 0).
    function _checkSetUp(Clock memory clock) internal view {
        if (clock.round == 0) revert FedChainMembershipIncomplete(_memberList.length, _memberCount);
    }

    /// @dev Registers `peer` as member `index` with the initial reputation.
    function _register(address peer, uint256 index, bool commitReveal) internal {
        if (peer == address(0) || _members[peer].slot != 0) revert FedChainInvalidConfig("member");
        // weight non-zero now, so that the member's second slot is never written from zero.
        _members[peer] = Member(INITIAL_REPUTATION, 0, 0, 0, uint16(index + 1), bytes12(0), 0, 0, INITIAL_REPUTATION, false, bytes19(0));
        // Non-zero now, so that a member's first commitment costs a reused slot's price.
        if (commitReveal) _commitments[peer] = bytes32(uint256(1));
        _memberList.push(peer);
        emit MemberRegistered(peer, index, INITIAL_REPUTATION);
    }

    /// @dev Opens round 1 once all `n` members are registered; everyone counts as active in round 0.
    function _openFirstRound(uint256 n, bytes32 base) internal {
        _clock = Clock(1, uint64(block.number), 0, uint64(n) * INITIAL_REPUTATION, 0, 0, 0);
        _activity = n * INITIAL_REPUTATION; // lane 0
        emit RoundStarted(1, base);
    }

    function _expiry(Clock memory clock) internal view returns (uint256) {
        return _voteEnd(clock) + _revealBlocks;
    }

    /// @dev The block at which votes (or vote commitments) stop being taken.
    function _voteEnd(Clock memory clock) internal view returns (uint256) {
        return clock.startBlock + _submitBlocks + _updateRevealBlocks + _voteBlocks;
    }

    /// @dev Whether voting is open (or was: this does not look at its end). Plain submissions: once
    /// the submission window is closed. Sealed: once the update-reveal window is over, or earlier
    /// when the submission window is closed and every committed update has been revealed.
    function _votingOpen(Clock memory clock) internal view returns (bool) {
        uint256 closes = clock.startBlock + _submitBlocks;
        bool submissionClosed = block.number >= closes || clock.submissions == _memberCount;
        if (_updateRevealBlocks == 0) return submissionClosed;
        return block.number >= closes + _updateRevealBlocks || (submissionClosed && clock.reveals == clock.submissions);
    }

    function _checkVotingOpen(Clock memory clock) internal view {
        if (!_votingOpen(clock)) {
            revert FedChainVotingNotOpen(clock.round, clock.startBlock + _submitBlocks + _updateRevealBlocks);
        }
    }

    /// @dev Applies the reputation rule for the member's last unsettled round before `round` to
    /// `m` and returns the new lanes. The caller writes `m` back.
    function _settleInto(
        Member memory m,
        address peer,
        Outcome calldata previous,
        uint256 round,
        uint256 act,
        uint256 current
    ) internal returns (uint256) {
        uint256 last = m.submittedRound > m.votedRound ? m.submittedRound : m.votedRound;
        if (last <= m.settledRound || last >= round) return act;
        m.settledRound = uint32(last);
        (Status status, bytes20 winner) = _outcome(last);
        // A failed round changes nothing; neither does one too old to prove.
        if (status != Status.Finalized) return act;
        bytes32 key = _candidateKey(previous.model, previous.included);
        if (bytes20(key) != winner) revert FedChainInvalidOutcome(last);

        uint256 rep = m.reputation;
        if (m.submittedRound == last) {
            if ((previous.included >> (m.slot - 1)) & 1 == 1) rep += INCLUSION_REWARD;
            else rep /= 2;
        }
        if (m.votedRound == last) {
            if (m.voteKey == bytes12(key)) rep += m.lateVote ? LATE_AGREEMENT_REWARD : AGREEMENT_REWARD;
            else rep /= 2;
        }
        if (rep > MAX_REPUTATION) rep = MAX_REPUTATION;
        return _changeReputation(m, peer, last, rep, act, current);
    }

    function _finalize(
        Clock memory clock,
        uint256 round,
        bytes32 key,
        bytes32 model,
        uint256 included,
        uint256 weight
    ) internal {
        Lead memory lead = _lead;
        if (lead.round == round && lead.key == bytes20(key)) {
            _lead.weight = lead.weight | _LEAD_WINNER;
        } else {
            // A candidate other than the lead won: it takes the lead slot (the lead lost).
            _lead = Lead(uint32(round), bytes20(key), uint64(weight) | _LEAD_WINNER);
        }
        emit RoundFinalized(round, model, included, weight & ~_WINNER, clock.totalReputation);
        clock.modelRound = uint32(round);
        _startNext(clock, model);
    }

    function _fail(Clock memory clock) internal {
        // Archive a winner still held in the lead slot now, so that it can never be archived
        // later over the record of a newer failed round.
        Lead memory lead = _lead;
        if (lead.weight & _LEAD_WINNER != 0) {
            _outcomes[lead.round % OUTCOME_HISTORY] = Archived(lead.round, lead.key, uint8(Status.Finalized));
            _lead.weight = lead.weight & ~_LEAD_WINNER;
        }
        _outcomes[clock.round % OUTCOME_HISTORY] = Archived(clock.round, bytes20(0), uint8(Status.Failed));
        emit RoundFailed(clock.round);
        _startNext(clock, bytes32(0));
    }

    function _startNext(Clock memory clock, bytes32 base) internal {
        clock.round += 1;
        clock.startBlock = uint64(block.number);
        clock.submissions = 0;
        clock.commits = 0;
        clock.reveals = 0;
        // The lane of round - DORMANCY_ROUNDS - 1 expires: its members are dormant from now on.
        uint256 act = _withLane(_activity, clock.round, 0);
        _activity = act;
        clock.totalReputation = uint64(_sumLanes(act));
        _clock = clock;
        if (clock.round > _maxRounds) emit TaskCompleted(_maxRounds, base);
        else emit RoundStarted(clock.round, base);
    }
}
