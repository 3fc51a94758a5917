// SPDX-License-Identifier: Apache-2.0
pragma solidity >=0.8.24 <0.9.0;

/// @title FedChain: one federated-learning task run as rounds with no coordinator
/// @notice Members record the digest of their model update, then vote, weighted by reputation,
/// for the aggregate they computed themselves. A candidate that reaches the quorum becomes the new
/// global model; a round whose windows run out fails and the previous model carries over.
/// @dev Digests are the sha256 inside a CIDv0 multihash. No function loops over members: the
/// reputation effect of a round is settled per member, pulled by that member's next transaction
/// (or by anyone through `settle`).
contract FedChain {
    // ------------------------------------------------------------------ reputation rule
    /// @notice Reputation every member starts with.
    uint32 public constant INITIAL_REPUTATION = 1_000;
    /// @notice Upper bound on any member's reputation.
    uint32 public constant MAX_REPUTATION = 10_000;
    /// @notice Gain when a member's update is part of the finalized aggregate.
    uint32 public constant INCLUSION_REWARD = 100;
    /// @notice Gain when a member voted for the candidate that was finalized.
    uint32 public constant AGREEMENT_REWARD = 50;
    /// @notice Maximum number of members: the included set is a 256-bit bitmap.
    uint256 public constant MAX_MEMBERS = 256;
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
        uint16 quorumBps;
        uint32 maxRounds;
        uint8 rule;
        uint32 revealBlocks; // 0: plain votes; otherwise commit-reveal with a reveal window this long
    }

    /// @notice The winner of a round, as given back by `settle` callers.
    struct Outcome {
        bytes32 model;
        uint256 included;
    }

    struct Member {
        uint32 reputation;
        uint32 submittedRound;
        uint32 votedRound;
        uint32 settledRound;
        uint16 slot; // index + 1; zero means not a member
        bytes12 voteKey; // leading bytes of keccak256(model, included) last voted for
    }

    struct Clock {
        uint32 round;
        uint64 startBlock;
        uint16 submissions;
        uint64 totalReputation;
        uint32 modelRound;
        uint16 commits;
    }

    struct Submission {
        uint32 round;
        uint16 slot;
        uint32 reputation;
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
        Reveal
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
    /// @notice This digest was already recorded, in round `round`; copying is not contributing.
    error FedChainDuplicateUpdate(bytes32 update, uint256 round);
    /// @notice A zero digest names no artifact.
    error FedChainZeroDigest();
    /// @notice Voting for `round` opens at block `opensAt` or once every member has submitted.
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
    /// @notice The revealed vote does not match the peer's commitment for `round`.
    error FedChainCommitmentMismatch(uint256 round, address peer);

    // ------------------------------------------------------------------ events
    /// @notice A member was admitted at deployment.
    event MemberRegistered(address indexed peer, uint256 index, uint256 reputation);
    /// @notice Round `round` opened on top of global model `baseModel`; zero means the previous
    /// round failed and its base carries over.
    event RoundStarted(uint256 indexed round, bytes32 baseModel);
    /// @notice A member recorded the digest of its update; `reputation` is its weight this round.
    event UpdateSubmitted(uint256 indexed round, address indexed peer, bytes32 update, uint256 reputation);
    /// @notice A member committed to a vote it will reveal later (commit-reveal tasks).
    event VoteCommitted(uint256 indexed round, address indexed peer, bytes32 commitment);
    /// @notice A member voted for aggregate `model` built from the members in bitmap `included`.
    event VoteCast(uint256 indexed round, address indexed peer, bytes32 model, uint256 included, uint256 weight);
    /// @notice `model` became the global model; `weight` of `totalReputation` voted for it.
    event RoundFinalized(
        uint256 indexed round, bytes32 model, uint256 included, uint256 weight, uint256 totalReputation
    );
    /// @notice The windows of `round` ran out without a quorum; the previous model carries over.
    event RoundFailed(uint256 indexed round);
    /// @notice A member's reputation was settled for `round`.
    event ReputationChanged(address indexed peer, uint256 indexed round, uint256 previous, uint256 current);
    /// @notice The last round of the task has ended; `model` is zero if that round failed.
    event TaskCompleted(uint256 rounds, bytes32 model);

    // ------------------------------------------------------------------ state
    uint256 private immutable _submitBlocks;
    uint256 private immutable _voteBlocks;
    uint256 private immutable _revealBlocks;
    uint256 private immutable _quorumBps;
    uint256 private immutable _maxRounds;
    uint256 private immutable _memberCount;
    uint256 private immutable _rule;
    bytes32 private immutable _task;
    uint256 private immutable _deployBlock;

    Clock private _clock;
    bytes32 private immutable _initialModel;
    Lead private _lead;
    Archived[OUTCOME_HISTORY] private _outcomes;
    address[] private _memberList;
    mapping(address peer => Member) private _members;
    mapping(bytes32 update => Submission) private _submissions;
    mapping(address peer => bytes32 commitment) private _commitments;
    mapping(uint256 round => mapping(bytes32 key => uint256 weight)) private _candidates;

    /// @param config Members, initial model digest, task digest, window lengths in blocks,
    /// quorum in basis points of total reputation, number of rounds and aggregation rule id.
    constructor(Config memory config) {
        uint256 n = config.members.length;
        if (n == 0 || n > MAX_MEMBERS) revert FedChainInvalidConfig("members");
        if (config.submitBlocks == 0 || config.voteBlocks == 0) revert FedChainInvalidConfig("windows");
        if (config.quorumBps == 0 || config.quorumBps > 10_000) revert FedChainInvalidConfig("quorum");
        if (config.maxRounds == 0) revert FedChainInvalidConfig("rounds");
        if (config.initialModel == bytes32(0)) revert FedChainInvalidConfig("model");
        for (uint256 i = 0; i < n; ++i) {
            address peer = config.members[i];
            if (peer == address(0) || _members[peer].slot != 0) revert FedChainInvalidConfig("member");
            _members[peer] = Member(INITIAL_REPUTATION, 0, 0, 0, uint16(i + 1), bytes12(0));
            // Non-zero now, so that a member's first commitment costs a reused slot's price.
            if (config.revealBlocks != 0) _commitments[peer] = bytes32(uint256(1));
            _memberList.push(peer);
            emit MemberRegistered(peer, i, INITIAL_REPUTATION);
        }
        _submitBlocks = config.submitBlocks;
        _voteBlocks = config.voteBlocks;
        _revealBlocks = config.revealBlocks;
        _quorumBps = config.quorumBps;
        _maxRounds = config.maxRounds;
        _memberCount = n;
        _rule = config.rule;
        _task = config.task;
        _deployBlock = block.number;
        _initialModel = config.initialModel;
        _clock = Clock(1, uint64(block.number), 0, uint64(n) * INITIAL_REPUTATION, 0, 0);
        // Make every ring slot non-zero now, so that archiving an outcome later costs a reused
        // slot's price, paid at deployment instead of by a peer in some round.
        for (uint256 i = 0; i < OUTCOME_HISTORY; ++i) {
            _outcomes[i] = Archived(type(uint32).max, bytes20(0), uint8(Status.Unknown));
        }
        _lead = Lead(0, bytes20(0), 1);
        emit RoundStarted(1, config.initialModel);
    }

    // ------------------------------------------------------------------ transactions
    /// @notice Record the digest of this member's update for `round`, settling its previous round.
    /// @param round The round the update was trained for; must be the open round.
    /// @param update sha256 digest of the update artifact's root block (the CIDv0 multihash digest).
    /// @param previous The finalized outcome of the member's last unsettled round (zeros if none).
    function submit(uint256 round, bytes32 update, Outcome calldata previous) external {
        Member memory m = _loadMember(msg.sender);
        if (update == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _openRound(_clock, round);
        if (block.number >= clock.startBlock + _submitBlocks) {
            revert FedChainSubmissionClosed(round, clock.startBlock + _submitBlocks);
        }
        if (m.submittedRound == round) revert FedChainAlreadySubmitted(round, msg.sender);
        Submission memory seen = _submissions[update];
        if (seen.round != 0) revert FedChainDuplicateUpdate(update, seen.round);

        clock.totalReputation = _settleInto(m, msg.sender, previous, clock.totalReputation, round);
        m.submittedRound = uint32(round);
        _members[msg.sender] = m;
        _submissions[update] = Submission(uint32(round), m.slot, m.reputation);
        clock.submissions += 1;
        _clock = clock;
        emit UpdateSubmitted(round, msg.sender, update, m.reputation);
    }

    /// @notice Vote for the aggregate this member computed; finalizes the round on quorum.
    /// @dev A vote for the round that was just finalized is still recorded (it arrived in the
    /// same block as, or after, the deciding vote): it counts for the voter's reputation, so late
    /// honest voters are rewarded and late dissenters penalized, but it changes no outcome.
    /// @param round The open round, or the just-finalized one.
    /// @param model Digest of the aggregate model artifact.
    /// @param included Bitmap of member indices whose updates the aggregate includes.
    /// @param previous The finalized outcome of the member's last unsettled round (zeros if none).
    function vote(uint256 round, bytes32 model, uint256 included, Outcome calldata previous) external {
        Member memory m = _loadMember(msg.sender);
        if (_revealBlocks != 0) revert FedChainCommitRevealRequired();
        if (model == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _clock;
        bool late = round != 0 && round + 1 == clock.round && _statusOf(round) == Status.Finalized;
        if (!late) {
            clock = _openRound(clock, round);
            _checkVotingOpen(clock);
        }
        if (m.votedRound == round) revert FedChainAlreadyVoted(round, msg.sender);
        // A late vote must not overwrite a vote already cast in a later round.
        if (m.submittedRound > round || m.votedRound > round) revert FedChainRoundClosed(round, clock.round);

        clock.totalReputation = _settleInto(m, msg.sender, previous, clock.totalReputation, round);
        bytes32 key = _candidateKey(model, included);
        m.votedRound = uint32(round);
        m.voteKey = bytes12(key);
        _members[msg.sender] = m;
        emit VoteCast(round, msg.sender, model, included, m.reputation);
        if (late) {
            if (clock.totalReputation != _clock.totalReputation) _clock.totalReputation = clock.totalReputation;
            return; // recorded for reputation only
        }

        uint256 weight = _addWeight(round, key, m.reputation);
        if (_quorumReached(weight, clock.totalReputation)) {
            _finalize(clock, round, key, model, included, weight);
        } else if (clock.totalReputation != _clock.totalReputation) {
            _clock.totalReputation = clock.totalReputation;
        }
    }

    /// @notice Commit to a vote without showing it (commit-reveal tasks), settling the member's
    /// previous round. Nobody can copy a vote they cannot see.
    /// @param commitment keccak256(abi.encode(round, model, included, salt, voter)).
    function commitVote(uint256 round, bytes32 commitment, Outcome calldata previous) external {
        Member memory m = _loadMember(msg.sender);
        if (_revealBlocks == 0) revert FedChainCommitRevealDisabled();
        if (commitment == bytes32(0)) revert FedChainZeroDigest();
        Clock memory clock = _openRound(_clock, round);
        _checkVotingOpen(clock);
        uint256 commitDeadline = clock.startBlock + _submitBlocks + _voteBlocks;
        if (block.number >= commitDeadline || clock.commits == _memberCount) {
            revert FedChainVotingClosed(round, commitDeadline);
        }
        if (m.votedRound == round) revert FedChainAlreadyVoted(round, msg.sender);

        clock.totalReputation = _settleInto(m, msg.sender, previous, clock.totalReputation, round);
        m.votedRound = uint32(round);
        m.voteKey = bytes12(0); // not revealed yet
        _members[msg.sender] = m;
        _commitments[msg.sender] = commitment;
        clock.commits += 1;
        _clock = clock;
        emit VoteCommitted(round, msg.sender, commitment);
    }

    /// @notice Reveal a committed vote; counts like `vote` and finalizes the round on quorum.
    /// A vote never revealed counts as dissent when the round is settled.
    /// @dev As with `vote`, a reveal for the just-finalized round is recorded for reputation only.
    function revealVote(uint256 round, bytes32 model, uint256 included, bytes32 salt) external {
        Member memory m = _loadMember(msg.sender);
        if (_revealBlocks == 0) revert FedChainCommitRevealDisabled();
        Clock memory clock = _clock;
        bool late = round != 0 && round + 1 == clock.round && _statusOf(round) == Status.Finalized;
        if (!late) {
            clock = _openRound(clock, round);
            uint256 opensAt = clock.startBlock + _submitBlocks + _voteBlocks;
            if (block.number < opensAt && clock.commits < _memberCount) revert FedChainRevealNotOpen(round, opensAt);
        }
        if (m.votedRound != round || m.voteKey != bytes12(0)) revert FedChainNothingToReveal(round, msg.sender);
        if (keccak256(abi.encode(round, model, included, salt, msg.sender)) != _commitments[msg.sender]) {
            revert FedChainCommitmentMismatch(round, msg.sender);
        }
        bytes32 key = _candidateKey(model, included);
        m.voteKey = bytes12(key);
        _members[msg.sender] = m;
        emit VoteCast(round, msg.sender, model, included, m.reputation);
        if (late) return;
        uint256 weight = _addWeight(round, key, m.reputation);
        if (_quorumReached(weight, clock.totalReputation)) _finalize(clock, round, key, model, included, weight);
    }

    /// @notice Finalize a candidate whose votes reach the quorum (e.g. after reputations settled).
    /// @dev Reverts with `FedChainQuorumNotReached` when the candidate is short of the quorum.
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
        if (clock.round > _maxRounds) revert FedChainTaskComplete(_maxRounds);
        uint256 deadline = _expiry(clock);
        if (block.number < deadline) revert FedChainRoundStillOpen(clock.round, deadline);
        _fail(clock);
    }

    /// @notice Apply the reputation effect of `peer`'s last unsettled round.
    /// @param previous That round's finalized outcome (zeros if it failed).
    function settle(address peer, Outcome calldata previous) external {
        _checkMember(peer);
        Member memory m = _members[peer];
        Clock memory clock = _clock;
        uint64 total = _settleInto(m, peer, previous, clock.totalReputation, clock.round);
        _members[peer] = m;
        if (total != clock.totalReputation) {
            _clock.totalReputation = total;
        }
    }

    // ------------------------------------------------------------------ views
    /// @notice The task's configuration.
    function config()
        external
        view
        returns (
            bytes32 task,
            uint256 submitBlocks,
            uint256 voteBlocks,
            uint256 quorumBps,
            uint256 maxRounds,
            uint256 memberCount,
            uint256 rule,
            uint256 deployBlock,
            uint256 revealBlocks
        )
    {
        return (
            _task, _submitBlocks, _voteBlocks, _quorumBps, _maxRounds, _memberCount, _rule, _deployBlock, _revealBlocks
        );
    }

    /// @notice The open round, its phase and windows, as of the current block. `voteDeadline` is
    /// the block at which the round expires (after the reveal window in commit-reveal tasks).
    /// @dev An expired round shows phase `Expired` until someone advances it.
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
            uint256 totalReputation
        )
    {
        Clock memory c = _clock;
        round = c.round;
        startBlock = c.startBlock;
        submitDeadline = c.startBlock + _submitBlocks;
        voteDeadline = _expiry(c);
        submissions = c.submissions;
        totalReputation = c.totalReputation;
        uint256 revealOpens = submitDeadline + _voteBlocks;
        if (c.round > _maxRounds) phase = Phase.Complete;
        else if (block.number >= voteDeadline) phase = Phase.Expired;
        else if (_revealBlocks != 0 && (block.number >= revealOpens || c.commits == _memberCount)) phase = Phase.Reveal;
        else if (block.number >= submitDeadline || c.submissions == _memberCount) phase = Phase.Voting;
        else phase = Phase.Submission;
    }

    /// @notice The round that produced the current global model (0: the initial model) and the
    /// leading 20 bytes of its outcome key keccak256(abi.encode(model, included)).
    /// @dev The model digest itself is in that round's RoundFinalized event: storing it again
    /// would cost the finalizing voter a slot write every round. `outcomeOf` commits to it.
    function globalModel() external view returns (uint256 round, bytes20 key) {
        round = _clock.modelRound;
        if (round != 0) (, key) = _outcome(round);
    }

    /// @notice The digest of the model the task started from.
    function initialModel() external view returns (bytes32) {
        return _initialModel;
    }

    /// @notice All members in index order.
    function members() external view returns (address[] memory) {
        return _memberList;
    }

    /// @notice A member's settled reputation and participation.
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

    /// @notice Where and by whom `update` was recorded (round 0 if never).
    function submissionOf(bytes32 update)
        external
        view
        returns (uint256 round, address peer, uint256 reputation)
    {
        Submission memory s = _submissions[update];
        if (s.round == 0) return (0, address(0), 0);
        return (s.round, _memberList[s.slot - 1], s.reputation);
    }

    /// @notice Vote weight counted for a candidate of `round` (the open round, or the latest
    /// round with votes; earlier tallies are not kept).
    function candidateWeight(uint256 round, bytes32 model, uint256 included) external view returns (uint256) {
        return _weightOf(round, _candidateKey(model, included)) & ~_WINNER;
    }

    /// @notice How `round` ended and, if finalized, the leading 20 bytes of its winner's key
    /// keccak256(abi.encode(model, included)). `Unknown` for rounds that never existed or ended
    /// more than OUTCOME_HISTORY rounds ago (their events remain in the chain's logs).
    function outcomeOf(uint256 round) public view returns (Status status, bytes20 key) {
        if (round == 0 || round > _maxRounds) return (Status.Unknown, bytes20(0));
        if (round >= _clock.round) return (Status.Open, bytes20(0));
        return _outcome(round);
    }

    /// @notice Whether `round` ended with a finalized model (as far as `outcomeOf` knows).
    function isFinalized(uint256 round) external view returns (bool) {
        (Status status,) = outcomeOf(round);
        return status == Status.Finalized;
    }

    /// @notice Whether `round` ended without a quorum (as far as `outcomeOf` knows).
    function isFailed(uint256 round) external view returns (bool) {
        (Status status,) = outcomeOf(round);
        return status == Status.Failed;
    }

    /// @notice Whether (`model`, `included`) is the candidate that won `round`.
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

    function _required(uint256 total) internal view returns (uint256) {
        return (total * _quorumBps + 9_999) / 10_000;
    }

    function _quorumReached(uint256 weight, uint256 total) internal view returns (bool) {
        return total != 0 && (weight & ~_WINNER) * 10_000 >= total * _quorumBps;
    }

    /// @dev Loads the clock, fails an expired round first, and checks `round` is the open one.
    function _openRound(Clock memory clock, uint256 round) internal returns (Clock memory) {
        if (clock.round <= _maxRounds && block.number >= _expiry(clock)) {
            _fail(clock);
            clock = _clock;
        }
        if (clock.round > _maxRounds) revert FedChainTaskComplete(_maxRounds);
        if (round < clock.round) revert FedChainRoundClosed(round, clock.round);
        if (round > clock.round) revert FedChainRoundNotOpen(round, clock.round);
        return clock;
    }

    function _expiry(Clock memory clock) internal view returns (uint256) {
        return clock.startBlock + _submitBlocks + _voteBlocks + _revealBlocks;
    }

    function _checkVotingOpen(Clock memory clock) internal view {
        uint256 opensAt = clock.startBlock + _submitBlocks;
        if (block.number < opensAt && clock.submissions < _memberCount) {
            revert FedChainVotingNotOpen(clock.round, opensAt);
        }
    }

    /// @dev Applies the reputation rule for the member's last unsettled round before `round` to
    /// `m` and returns the new total. The caller writes `m` back.
    function _settleInto(Member memory m, address peer, Outcome calldata previous, uint64 total, uint256 round)
        internal
        returns (uint64)
    {
        uint256 last = m.submittedRound > m.votedRound ? m.submittedRound : m.votedRound;
        if (last <= m.settledRound || last >= round) return total;
        m.settledRound = uint32(last);
        (Status status, bytes20 winner) = _outcome(last);
        // A failed round changes nothing; neither does one too old to prove.
        if (status != Status.Finalized) return total;
        bytes32 key = _candidateKey(previous.model, previous.included);
        if (bytes20(key) != winner) revert FedChainInvalidOutcome(last);

        uint256 rep = m.reputation;
        uint256 before = rep;
        if (m.submittedRound == last) {
            if ((previous.included >> (m.slot - 1)) & 1 == 1) rep += INCLUSION_REWARD;
            else rep /= 2;
        }
        if (m.votedRound == last) {
            if (m.voteKey == bytes12(key)) rep += AGREEMENT_REWARD;
            else rep /= 2;
        }
        if (rep > MAX_REPUTATION) rep = MAX_REPUTATION;
        if (rep == before) return total;
        m.reputation = uint32(rep);
        emit ReputationChanged(peer, last, before, rep);
        return uint64(total + rep - before);
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
        _clock = clock;
        if (clock.round > _maxRounds) emit TaskCompleted(_maxRounds, base);
        else emit RoundStarted(clock.round, base);
    }
}
