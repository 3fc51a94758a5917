// SPDX-License-Identifier: Apache-2.0
pragma solidity >=0.8.24 <0.9.0;

import {FedChain} from "../FedChain.sol";

/// @dev The few forge cheatcodes used here (forge-std is not vendored: `forge test` runs offline).
interface Vm {
    function prank(address sender) external;
    function roll(uint256 blockNumber) external;
    function assume(bool condition) external pure;
}

Vm constant VM = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

/// @notice Drives one FedChain deployment with random members' actions; records what the
/// invariants need (ghost state) and flags any violation it sees as it happens.
contract Handler {
    FedChain public immutable chain;
    address[] public members;
    address public constant OUTSIDER = address(0xBEEF);

    mapping(uint256 round => FedChain.Outcome) public winners;
    uint256[] public finalizedRounds;
    mapping(uint256 round => mapping(address peer => uint256 count)) public votesCast;

    bool public doubleVote;
    bool public tallyOverTotal;
    bool public outsiderChangedState;
    bool public settleNotIdempotent;
    uint256 public calls;

    constructor(FedChain chain_, address[] memory members_) {
        chain = chain_;
        members = members_;
    }

    function _member(uint256 seed) internal view returns (address) {
        return members[seed % members.length];
    }

    function _candidate(uint256 round, uint256 choice) internal view returns (FedChain.Outcome memory) {
        choice %= 3; // few candidates, so that votes collide and rounds finalize
        uint256 included = choice == 0 ? (1 << members.length) - 1 : (choice == 1 ? 0x7 : 0x30);
        return FedChain.Outcome(keccak256(abi.encode(round, choice)), included);
    }

    /// @dev What a member must pass as `previous`: the winner of its last unsettled round.
    function _previous(address peer) internal view returns (FedChain.Outcome memory) {
        (,, uint256 submitted, uint256 voted, uint256 settled) = chain.memberInfo(peer);
        uint256 last = submitted > voted ? submitted : voted;
        if (last > settled) return winners[last];
        return FedChain.Outcome(bytes32(0), 0);
    }

    function _record(uint256 round, FedChain.Outcome memory candidate, bool wasFinalized) internal {
        if (!wasFinalized && chain.isFinalized(round)) {
            winners[round] = candidate;
            finalizedRounds.push(round);
        }
    }

    function submit(uint256 who, bytes32 update) external {
        calls++;
        address peer = _member(who);
        (uint256 round,,,,,,,) = chain.roundState();
        FedChain.Outcome memory prev = _previous(peer);
        VM.prank(peer);
        try chain.submit(round, update, prev) {} catch {}
    }

    function vote(uint256 who, uint256 choice, bool late) external {
        calls++;
        address peer = _member(who);
        (uint256 round,,,,,, uint256 total,) = chain.roundState();
        if (late && round > 1) round -= 1;
        FedChain.Outcome memory c = _candidate(round, choice);
        FedChain.Outcome memory prev = _previous(peer);
        bool wasFinalized = chain.isFinalized(round);
        VM.prank(peer);
        try chain.vote(round, c.model, c.included, prev) {
            if (++votesCast[round][peer] > 1) doubleVote = true;
            _record(round, c, wasFinalized);
            if (chain.candidateWeight(round, c.model, c.included) > total) tallyOverTotal = true;
        } catch {}
    }

    function finalize(uint256 choice) external {
        calls++;
        (uint256 round,,,,,,,) = chain.roundState();
        FedChain.Outcome memory c = _candidate(round, choice);
        try chain.finalize(round, c.model, c.included) {
            _record(round, c, false);
        } catch {}
    }

    function roll(uint8 blocks) external {
        calls++;
        VM.roll(block.number + 1 + (blocks % 8));
    }

    function advance() external {
        calls++;
        try chain.advance() {} catch {}
    }

    function settle(uint256 who) external {
        calls++;
        address peer = _member(who);
        FedChain.Outcome memory prev = _previous(peer);
        try chain.settle(peer, prev) {
            (, uint256 rep,,, uint256 settled) = chain.memberInfo(peer);
            uint256 counted = chain.countedReputation();
            chain.settle(peer, prev); // a second settlement changes nothing
            (, uint256 rep2,,, uint256 settled2) = chain.memberInfo(peer);
            if (rep2 != rep || settled2 != settled || chain.countedReputation() != counted) settleNotIdempotent = true;
        } catch {}
    }

    function outsider(bytes32 update, uint256 choice) external {
        calls++;
        (uint256 round,,,,,,,) = chain.roundState();
        FedChain.Outcome memory c = _candidate(round, choice);
        VM.prank(OUTSIDER);
        try chain.submit(round, update, FedChain.Outcome(bytes32(0), 0)) {
            outsiderChangedState = true;
        } catch {}
        VM.prank(OUTSIDER);
        try chain.vote(round, c.model, c.included, FedChain.Outcome(bytes32(0), 0)) {
            outsiderChangedState = true;
        } catch {}
    }

    function finalizedCount() external view returns (uint256) {
        return finalizedRounds.length;
    }

    function memberCount() external view returns (uint256) {
        return members.length;
    }
}

/// @notice Invariants of FedChain under random sequences of members' and outsiders' actions.
contract FedChainInvariants {
    FedChain internal chain;
    Handler internal handler;
    address[] internal members;

    function setUp() public {
        for (uint256 i = 0; i < 6; ++i) {
            members.push(address(uint160(0x1000 + i)));
        }
        chain = new FedChain(
            FedChain.Config({
                members: members,
                initialModel: keccak256("model"),
                task: keccak256("task"),
                submitBlocks: 4,
                voteBlocks: 4,
                quorumNumerator: 2,
                quorumDenominator: 3,
                maxRounds: 1_000,
                rule: 0,
                revealBlocks: 0,
                updateRevealBlocks: 0
            })
        );
        handler = new Handler(chain, members);
    }

    /// @dev The handler can drive a round to finalization, so the invariants see finalized rounds.
    function test_handlerFinalizesARound() public {
        for (uint256 i = 0; i < members.length; ++i) {
            handler.submit(i, keccak256(abi.encode(i)));
        }
        for (uint256 i = 0; i < 4; ++i) {
            handler.vote(i, 0, false);
        }
        require(handler.finalizedCount() == 1 && chain.isFinalized(1), "the handler did not finalize round 1");
        handler.vote(4, 1, true); // a late vote for another candidate changes nothing
        (bytes32 model, uint256 included) = handler.winners(1);
        require(chain.isOutcome(1, model, included), "a late vote changed the outcome");
    }

    /// @dev forge's invariant runner calls only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    function invariant_reputationWithinBounds() public view {
        uint256 sum;
        for (uint256 i = 0; i < members.length; ++i) {
            (, uint256 rep,,,) = chain.memberInfo(members[i]);
            require(rep <= chain.MAX_REPUTATION(), "reputation above MAX_REPUTATION");
            sum += rep;
        }
        require(chain.countedReputation() <= sum, "counted reputation above the members' sum");
        (,,,,,, uint256 total,) = chain.roundState();
        require(total <= members.length * chain.MAX_REPUTATION(), "total out of bounds");
    }

    /// @dev The activity lanes hold exactly the non-dormant members' reputations, and the open
    /// round's snapshotted total is exactly the sum of its members' vote weights.
    function invariant_countedReputationAndSnapshotAreExact() public view {
        (uint256 round,,,,,, uint256 total,) = chain.roundState();
        if (round > 1_000) return; // task complete
        uint256 counted;
        uint256 weights;
        for (uint256 i = 0; i < members.length; ++i) {
            (, uint256 rep,,,) = chain.memberInfo(members[i]);
            (uint256 weight, uint256 active) = chain.voteWeight(members[i]);
            if (active + chain.DORMANCY_ROUNDS() >= round) counted += rep;
            weights += weight;
        }
        require(chain.countedReputation() == counted, "activity lanes drifted from the members' reputations");
        require(weights == total, "snapshotted total is not the sum of the round's weights");
    }

    function invariant_noMemberVotesTwiceInARound() public view {
        require(!handler.doubleVote(), "a member voted twice in one round");
        for (uint256 i = 0; i < members.length; ++i) {
            (uint256 round,,,,,,,) = chain.roundState();
            (,,, uint256 voted,) = chain.memberInfo(members[i]);
            require(voted <= round, "vote recorded for a future round");
        }
    }

    function invariant_finalizedOutcomeNeverChanges() public view {
        uint256 n = handler.finalizedCount();
        (uint256 current,,,,,,,) = chain.roundState();
        for (uint256 i = 0; i < n; ++i) {
            uint256 r = handler.finalizedRounds(i);
            if (r + chain.OUTCOME_HISTORY() <= current) continue; // left the on-chain ring
            (bytes32 model, uint256 included) = handler.winners(r);
            require(chain.isOutcome(r, model, included), "a finalized outcome changed");
        }
    }

    function invariant_talliedWeightAtMostSnapshottedTotal() public view {
        require(!handler.tallyOverTotal(), "a tally exceeded its round's snapshotted total");
    }

    function invariant_nonMembersChangeNothing() public view {
        require(!handler.outsiderChangedState(), "a non-member submitted or voted");
    }

    function invariant_settlementIsIdempotent() public view {
        require(!handler.settleNotIdempotent(), "a second settlement changed state");
    }
}

/// @notice Stateless fuzz tests of the quorum rule.
contract FedChainQuorumFuzz {
    function _deploy(uint256 n, uint16 num, uint16 den) internal returns (FedChain chain, address[] memory members) {
        members = new address[](n);
        for (uint256 i = 0; i < n; ++i) {
            members[i] = address(uint160(0x2000 + i));
        }
        chain = new FedChain(
            FedChain.Config(members, keccak256("model"), keccak256("task"), 4, 4, num, den, 10, 0, 0, 0)
        );
    }

    /// @dev With n equal members, k votes finalize exactly when k / n >= num / den; in particular
    /// 2 of 3 reach 2/3, and fewer than half never finalize.
    function testFuzz_quorumIsExact(uint8 nSeed, uint8 kSeed, uint16 num, uint16 den) public {
        uint256 n = 1 + (nSeed % 12);
        den = uint16(1 + (den % 12));
        num = uint16(num % (den + 1));
        VM.assume(2 * uint256(num) >= den);
        uint256 k = kSeed % (n + 1);
        (FedChain chain, address[] memory members) = _deploy(n, num, den);
        for (uint256 i = 0; i < n; ++i) {
            VM.prank(members[i]);
            chain.submit(1, keccak256(abi.encode(i)), FedChain.Outcome(bytes32(0), 0));
        }
        bytes32 model = keccak256("aggregate");
        for (uint256 i = 0; i < k; ++i) {
            if (chain.isFinalized(1)) break;
            VM.prank(members[i]);
            chain.vote(1, model, 1, FedChain.Outcome(bytes32(0), 0));
        }
        bool expected = k * den >= n * num && k > 0;
        require(chain.isFinalized(1) == expected, "quorum decision is not exact");
        if (2 * k < n) require(!chain.isFinalized(1), "a minority finalized");
    }

    function testFuzz_quorumBelowAHalfIsRefused(uint16 num, uint16 den) public {
        den = uint16(2 + (den % 10_000));
        num = uint16(num % den);
        VM.assume(2 * uint256(num) < den);
        try this.deployExternal(num, den) {
            revert("a quorum below 1/2 was accepted");
        } catch {}
    }

    function deployExternal(uint16 num, uint16 den) external {
        _deploy(3, num, den);
    }
}

/// @dev Member lists longer than one transaction's batch: whatever the length and however the
/// remaining list is cut, registration ends with every member in order and round 1 open, and
/// nothing but the committed remainder is accepted.
contract FedChainMembershipFuzz {
    function testFuzz_batchedMembershipRegistersEveryMemberInOrder(uint16 nSeed) public {
        uint256 n = 1 + (uint256(nSeed) % 256);
        address[] memory members = new address[](n);
        for (uint256 i = 0; i < n; ++i) {
            members[i] = address(uint160(0x3000 + i));
        }
        FedChain chain = new FedChain(FedChain.Config(members, keccak256("model"), keccak256("task"), 4, 4, 2, 3, 10, 0, 0));
        uint256 per = chain.MEMBERS_PER_TRANSACTION();
        for (uint256 start = per; start < n; start += per) {
            (uint256 round,,,,,,) = chain.roundState();
            require(round == 0, "a round opened before every member was registered");
            address[] memory rest = new address[](n - start);
            for (uint256 i = start; i < n; ++i) {
                rest[i - start] = members[i];
            }
            if (rest.length > 1) {
                address[] memory cut = new address[](rest.length - 1);
                for (uint256 i = 0; i < cut.length; ++i) {
                    cut[i] = rest[i];
                }
                try chain.admitMembers(cut) {
                    revert("a list other than the committed remainder was accepted");
                } catch {}
            }
            chain.admitMembers(rest);
        }
        (uint256 opened,,,,,, uint256 total) = chain.roundState();
        require(opened == 1 && total == n * 1_000, "round 1 did not open over every member");
        address[] memory registered = chain.members();
        require(registered.length == n, "a member is missing");
        for (uint256 i = 0; i < n; ++i) {
            require(registered[i] == members[i], "members are out of order");
        }
    }
}
